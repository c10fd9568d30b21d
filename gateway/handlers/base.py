"""What every part of ``PairingGateway`` shares: its services, its connections, its options."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgspec
from redis.exceptions import RedisError

from gateway.deadlines import Deadlines
from gateway.fanout import Fanout, LocalEmit
from gateway.metrics import Metrics
from gateway.protocol import ErrorCode, GatewayError, ServerEvent
from pairing import (
    AppPairingService,
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    RateLimitService,
    RunnerRegistration,
    RunnerRegistry,
)
from pairing.recovery import RecoveryService
from pairing.relay import Recipient, RelayService

Ack = dict[str, Any]
STORE_ERRORS = (RedisError, OSError, TimeoutError)

#: Relayed events: they carry a seq and pass the receiving connection's resume floors.
SEQ_EVENTS = frozenset({ServerEvent.TERMINAL_OUTPUT.value, ServerEvent.TERMINAL_INPUT.value})
#: Tries of a relay whose expected recipients were out of date (pairings changing under it).
RELAY_ATTEMPTS = 5
#: Sends an event with its recovery offset as the last argument to one local socket.
OffsetEmit = Callable[[str, str, Any, str], Awaitable[None]]
#: A held message: msgpack of the message without its seq (keeps binary data binary).
_encode_held = msgspec.msgpack.Encoder().encode
decode_held = msgspec.msgpack.Decoder().decode


class Role(Enum):
    """What a connection has shown itself to be, by auth or by its first role event."""

    UNKNOWN = "unknown"  # connected without auth.appSessionId, no role event yet
    APP = "app"
    RUNNER = "runner"


@dataclass(slots=True)
class Conn:
    """What this replica knows about one connected socket."""

    sid: str
    conn_id: str  # replica-qualified, stored as a runner's owner
    address: str
    app_session_id: str
    role: Role = Role.UNKNOWN
    runner_id: str | None = None
    #: The app presented its own appSessionId (so older sockets of it may exist elsewhere).
    presented: bool = False
    #: The one room this socket is in: app:{id} or runner:{id} (None before its role).
    room: str | None = None
    #: Resume: the highest seq delivered per stream (the app's output: key ""; a runner's
    #: input: key appSessionId). A seq at or below it is not delivered again.
    floors: dict[str, int] | None = None
    #: While held messages are replayed, live ones wait here (then go through the floors).
    held_back: list[tuple[str, Any]] | None = None
    #: The app's lastSeq from auth, until its replay ran.
    resume_from: int | None = None
    #: Its room was held elsewhere until now: read the hold again once the replay ends.
    catch_up: bool = False
    #: What the last relay found: an app's runner, a runner's paired apps (None: unknown).
    peer_runner: str | None = None
    peer_apps: list[str] | None = None
    #: When (the gateway's clock) the store last confirmed ``peer_apps``; between two reads
    #: the runner's pairing notifications keep it current (``RunnerEvents.runner_output``).
    peer_apps_checked: float = float("-inf")
    #: Counts the notifications that changed ``peer_apps``: a store read that a notification
    #: overtook is not taken as the truth.
    peer_apps_version: int = 0
    #: Paired on this connection and no app:command relayed yet: the first one tells
    #: whether the pairing is end-to-end encrypted (gateway_pairings_by_mode_total).
    mode_unseen: bool = False
    #: Connection state recovery (only when it is on, and the connection has a pid).
    recovery: Recoverable | None = None


@dataclass(slots=True)
class Recoverable:
    """A connection's Socket.IO private session: its pid, the token of its pid record, and
    positions in its app's output log: where the session started, and the offset of the
    last event it was sent."""

    pid: str
    token: str
    start: int
    position: int


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """The settings the handlers read (the rest configure the services they are given)."""

    heartbeat_interval_s: float = 10.0
    runner_secret: str | None = None
    store_timeout_s: float = 3.0
    require_e2e: bool = False
    #: How long a runner's known paired apps are trusted without the store confirming them
    #: (a Redis Cluster reads the runner's app set in another step; one Redis checks it in
    #: the relay's own script anyway). Bounds what a lost pairing notification can cost.
    members_recheck_s: float = 1.0


class GatewayBase:
    """The injected services and this replica's connections, for the handlers beside it."""

    def __init__(
        self,
        *,
        sessions: PairingSessionService,
        runners: RunnerRegistry,
        registration: RunnerRegistration,
        codes: PairingCodeService,
        rate_limit: RateLimitService,
        history: PairingHistoryService,
        relay: RelayService,
        fanout: Fanout,
        send: LocalEmit,
        metrics: Metrics,
        options: GatewayOptions,
        replica_id: str,
        recovery: RecoveryService | None = None,
        send_with_offset: OffsetEmit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.runners = runners
        self.registration = registration
        self.codes = codes
        self.rate_limit = rate_limit
        self.history = history
        self.relay = relay
        # (built here from the other services, in their key layout)
        self.pairing = AppPairingService(
            codes.redis, codes=codes, rate_limit=rate_limit, history=history, layout=codes.layout
        )
        self.fanout = fanout
        #: Emits to one local socket (python-socketio); ``deliver`` is the way in.
        self.send = send
        self.metrics = metrics
        self.options = options
        self.replica_id = replica_id
        self.conns: dict[str, Conn] = {}
        #: Set on SIGTERM: runners leaving now reconnect elsewhere, so keep their pairings.
        self.shutting_down = False
        self._background: set[asyncio.Task[None]] = set()
        #: Every event's bound (store_timeout_s): one timer for all, not one per event.
        self._deadlines = Deadlines(options.store_timeout_s)
        #: sid -> confirmation of its room's subscription, for an app resuming at connect.
        self._resume_waits: dict[str, asyncio.Future[None] | None] = {}
        #: Connection state recovery (None: off): pid records, and how offsets are sent.
        self.recovery = recovery
        self.send_with_offset = send_with_offset
        #: Monotonic seconds: how old what a connection learnt from the store is.
        self.clock = clock

    async def _open_session(self, conn: Conn, last_seq: int | None) -> None:
        """Connection state recovery: give a new connection its pid (``handlers.recovery``)."""

    async def _mark_app(self, conn: Conn) -> None:
        """A connection with a pid became an app after it connected (recovery's record)."""

    def _recipient(self, app: str, room: str, event: str) -> Recipient:
        """Delivered here if the room is here, else published by the relay script."""
        if self.fanout.is_local(room):
            return Recipient(app, None, b"")
        return Recipient(app, self.fanout.channel(room), self.fanout.envelope_prefix(room, event))


def held_blob(message: dict[str, Any]) -> bytes:
    """A message as the relay holds it for resume; INVALID_PAYLOAD if msgpack cannot carry it."""
    try:
        return _encode_held(message)
    except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, "data cannot be relayed") from None
