"""The contract's events: thin handlers over the injected pairing services.

Each handler validates its payload into a msgspec type, calls a service, and returns the
ack. ``dispatch`` wraps every handler so that whatever happens the client gets exactly one
ack: success, the handler's error code, UNAVAILABLE when the store fails or does not answer
within ``store_timeout_s``, or INTERNAL for a bug (logged, never leaked).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import msgspec
from redis.exceptions import RedisError

from gateway.deadlines import Deadlines
from gateway.fanout import Fanout, LocalEmit, room_for_app, room_for_runner
from gateway.metrics import Metrics
from gateway.protocol import (
    CommandPayload,
    EmptyPayload,
    ErrorCode,
    Event,
    GatewayError,
    HeartbeatPayload,
    OutputPayload,
    PairPayload,
    RegisterPayload,
    ResizePayload,
    ServerEvent,
    UnpairReason,
    check_depth,
    decode_args,
    error_ack,
    is_code_shaped,
)
from pairing import (
    AppPairingService,
    HistoryEvent,
    NewEntry,
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    PairStatus,
    RateLimitService,
    RefusalReason,
    Registration,
    RegistrationStatus,
    RunnerRegistration,
    RunnerRegistry,
    StaleRunner,
)
from pairing.relay import IN, OUT, Held, InputStatus, Recipient, RelayService

log = logging.getLogger("gateway.events")

Ack = dict[str, Any]
STORE_ERRORS = (RedisError, OSError, TimeoutError)

#: Relayed events: they carry a seq and pass the receiving connection's resume floors.
_SEQ_EVENTS = frozenset({ServerEvent.TERMINAL_OUTPUT.value, ServerEvent.TERMINAL_INPUT.value})
#: Tries of a relay whose expected recipients were out of date (pairings changing under it).
_RELAY_ATTEMPTS = 5
#: A held message: msgpack of the message without its seq (keeps binary data binary).
_encode_held = msgspec.msgpack.Encoder().encode
_decode_held = msgspec.msgpack.Decoder().decode


class Role(Enum):
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


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    heartbeat_interval_s: float = 10.0
    runner_secret: str | None = None
    store_timeout_s: float = 3.0


#: UNAUTHORIZED messages, for people (the runner's operator reads them in its log).
_REFUSALS = {
    RefusalReason.BAD_TOKEN: "token does not match runnerId",
    RefusalReason.KEY_MISSING: "this runnerId is bound to a runnerKey; present it",
    RefusalReason.KEY_MISMATCH: "this runnerId is bound to a different runnerKey",
    RefusalReason.KEY_REQUIRED: "this gateway requires a runnerKey",
}

Handler = Callable[[Conn, tuple[Any, ...]], Awaitable[Ack]]


class PairingGateway:
    """Socket.IO-facing behaviour, with every dependency injected."""

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
        self._handlers: dict[str, Handler] = {
            Event.RUNNER_REGISTER: self.runner_register,
            Event.RUNNER_HEARTBEAT: self.runner_heartbeat,
            Event.RUNNER_OUTPUT: self.runner_output,
            Event.APP_PAIR: self.app_pair,
            Event.APP_UNPAIR: self.app_unpair,
            Event.APP_STATUS: self.app_status,
            Event.APP_COMMAND: self.app_command,
            Event.APP_RESIZE: self.app_resize,
        }
        self._background: set[asyncio.Task[None]] = set()
        #: Every event's bound (store_timeout_s): one timer for all, not one per event.
        self._deadlines = Deadlines(options.store_timeout_s)
        #: sid -> confirmation of its room's subscription, for an app resuming at connect.
        self._resume_waits: dict[str, asyncio.Future[None] | None] = {}

    # -- dispatch -------------------------------------------------------------------------

    async def dispatch(self, event: str, sid: str, args: tuple[Any, ...]) -> Ack:
        started = time.perf_counter()
        handler = self._handlers.get(event)
        label = event if handler is not None else "unknown"
        try:
            conn = self.conns.get(sid)
            if handler is None:
                raise GatewayError(ErrorCode.INVALID_PAYLOAD, f"unknown event {event[:64]!r}")
            if conn is None:
                raise GatewayError(ErrorCode.INTERNAL, "connection state is missing")
            task = asyncio.current_task()
            assert task is not None
            deadline = self._deadlines.enter(task)
            try:
                ack = await handler(conn, args)
            except BaseException as exc:
                expired = self._deadlines.leave(deadline, task)
                if expired and isinstance(exc, asyncio.CancelledError):
                    raise TimeoutError("the event outlasted store_timeout_s") from None
                raise
            self._deadlines.leave(deadline, task)
            result = "success"
        except GatewayError as exc:
            ack, result = error_ack(exc.code, exc.message), exc.code.value
        except RecursionError:
            # Data nested deeper than python-socketio can re-encode (it recurses per level).
            ack = error_ack(ErrorCode.INVALID_PAYLOAD, "the payload is nested too deeply")
            result = ErrorCode.INVALID_PAYLOAD.value
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels(label).inc()
            log.warning("store unavailable", extra={"event": label, "error": repr(exc)})
            ack = error_ack(ErrorCode.UNAVAILABLE, "the pairing store is unreachable; retry")
            result = ErrorCode.UNAVAILABLE.value
        except Exception:
            log.exception("handler failed", extra={"event": label})
            ack = error_ack(ErrorCode.INTERNAL, "internal error")
            result = ErrorCode.INTERNAL.value
        self.metrics.record_event(label, result, time.perf_counter() - started)
        return ack

    # -- connection lifecycle -------------------------------------------------------------

    async def connected(
        self, sid: str, address: str, app_session_id: str | None, last_seq: int | None = None
    ) -> None:
        """Register a new socket; an app presenting its id takes over older sockets of it.

        With ``last_seq`` the app resumes: live output waits (``held_back``) until
        ``after_connect`` has replayed what the hold has after it.
        """
        presented = app_session_id is not None
        conn = Conn(
            sid=sid,
            conn_id=f"{self.replica_id}/{sid}",
            address=address,
            app_session_id=app_session_id or secrets.token_urlsafe(24),
            presented=presented,
        )
        self.conns[sid] = conn
        if presented and last_seq is not None:
            conn.resume_from = last_seq
            conn.held_back = []
        if presented:
            try:
                async with asyncio.timeout(self.options.store_timeout_s):
                    await self._become_app(conn)
            except STORE_ERRORS as exc:
                # Local delivery works; older sockets elsewhere go when their pings fail.
                self.metrics.redis_errors.labels("connect").inc()
                log.warning("could not announce app connection", extra={"error": repr(exc)})

    async def after_connect(self, sid: str) -> None:
        """The client has its CONNECT: replay held output to a resuming app, off the read loop."""
        conn = self.conns.get(sid)
        waiter = self._resume_waits.pop(sid, None)
        if conn is None or conn.resume_from is None:
            return
        task = asyncio.create_task(self._resume_app(conn, conn.resume_from, waiter))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_app(
        self, conn: Conn, after: int, waiter: asyncio.Future[None] | None
    ) -> None:
        conn.resume_from = None
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                if waiter is not None:
                    await waiter  # published output reaches us from here on
                held = await self.relay.held(conn.app_session_id, OUT, after)
            if held is not None:  # (None only when a pairing is asked for)
                await self._replay(conn, "", ServerEvent.TERMINAL_OUTPUT, after, held)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("resume").inc()
            log.warning("could not replay held output", extra={"error": repr(exc)})
            self._set_floor(conn, "", after)
        except Exception:
            log.exception("replay failed")
            self._set_floor(conn, "", after)
        finally:
            await self._release_held_back(conn)

    async def _replay(
        self, conn: Conn, stream: str, event: ServerEvent, after: int, held: Held
    ) -> None:
        """Send a stream's held messages after ``after``, a gap first if some are gone."""
        if held.last_seq <= after:
            # Nothing newer (or the counter started over below the client's lastSeq).
            self._set_floor(conn, stream, min(after, held.last_seq))
            return
        first = max(held.first_seq, after + 1) if held.messages else held.last_seq + 1
        if first > after + 1:
            await self._gap(conn, stream, after + 1, first - 1)
        for i, blob in enumerate(held.messages):
            data = _decode_held(blob)
            data["seq"] = first + i
            await self.send(conn.sid, event.value, data)
        self.metrics.resumed.labels(event.value).inc(len(held.messages))
        self._set_floor(conn, stream, held.last_seq)

    async def _gap(self, conn: Conn, stream: str, first: int, last: int) -> None:
        """Tell the client which seqs it will never get (the hold no longer had them)."""
        gap: dict[str, Any] = {"fromSeq": first, "toSeq": last, "missed": last - first + 1}
        if stream:
            gap = {"appSessionId": stream, **gap}
        self.metrics.resume_gaps.inc()
        await self.send(conn.sid, ServerEvent.TERMINAL_GAP.value, gap)

    @staticmethod
    def _set_floor(conn: Conn, stream: str, seq: int) -> None:
        if conn.floors is None:
            conn.floors = {}
        conn.floors[stream] = seq

    async def _release_held_back(self, conn: Conn) -> None:
        """Live messages that arrived during a replay, in order, minus what it covered."""
        held_back = conn.held_back
        while held_back:
            event, data = held_back.pop(0)
            if await self._pass_floor(conn, event, data):
                await self.send(conn.sid, event, data)
        conn.held_back = None
        if conn.catch_up:
            await self.catch_up(conn.sid)

    async def catch_up(self, sid: str) -> None:
        """Another replica had this socket's room until now (it held an older socket of the
        app or runner, ``Fanout``'s ``moved``): what it delivered there, after this socket's
        replay read the hold, is in the hold; read it again after the socket's floors."""
        conn = self.conns.get(sid)
        if conn is None:
            return
        if conn.held_back is not None:
            conn.catch_up = True  # a replay is under way: once it is done
            return
        conn.catch_up = False
        if not conn.floors:
            return  # nothing relayed to it yet, nor a resume: it gets what comes from now on
        conn.held_back = []
        task = asyncio.create_task(self._catch_up(conn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _catch_up(self, conn: Conn) -> None:
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                for stream, floor in list((conn.floors or {}).items()):
                    if conn.role is Role.APP and not stream:
                        held = await self.relay.held(conn.app_session_id, OUT, floor)
                        event = ServerEvent.TERMINAL_OUTPUT
                    elif conn.role is Role.RUNNER and stream:
                        held = await self.relay.held(stream, IN, floor, paired_with=conn.runner_id)
                        event = ServerEvent.TERMINAL_INPUT
                    else:
                        continue
                    if held is not None:
                        await self._replay(conn, stream, event, floor, held)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("resume").inc()
            log.warning("could not read the hold again", extra={"error": repr(exc)})
        except Exception:
            log.exception("catch-up failed")
        finally:
            await self._release_held_back(conn)

    async def deliver(self, sid: str, event: str, data: Any) -> None:
        """Every emit to a local socket; relayed messages pass its resume floors."""
        conn = self.conns.get(sid)
        if conn is not None and conn.peer_apps is not None and isinstance(data, dict):
            # The runner's replica sees its pairing changes: keep the relay's guess current.
            app = data.get("appSessionId")
            if not isinstance(app, str):
                pass
            elif event == ServerEvent.PAIRED.value and app not in conn.peer_apps:
                conn.peer_apps = sorted([*conn.peer_apps, app])
            elif event == ServerEvent.APP_UNPAIRED.value and app in conn.peer_apps:
                conn.peer_apps = [a for a in conn.peer_apps if a != app]
        if conn is not None and event in _SEQ_EVENTS and isinstance(data, dict) and "seq" in data:
            if conn.held_back is not None:
                conn.held_back.append((event, data))
                return
            if not await self._pass_floor(conn, event, data):
                return
        await self.send(sid, event, data)

    async def _pass_floor(self, conn: Conn, event: str, data: dict[str, Any]) -> bool:
        """False for a seq this connection has had; reports a jump as a gap."""
        seq = data["seq"]
        stream = ""
        if event == ServerEvent.TERMINAL_INPUT.value:
            stream = data.get("appSessionId", "")
        floors = conn.floors
        if floors is None:
            floors = conn.floors = {}
        floor = floors.get(stream)
        if floor is not None and seq == 1 and conn.held_back is None:
            floor = None  # a stream starting over (the store lost its data): no duplicate
        if floor is not None:
            if seq <= floor:
                return False
            if seq > floor + 1:
                await self._gap(conn, stream, floor + 1, seq - 1)
        floors[stream] = seq
        return True

    async def disconnected(self, sid: str) -> None:
        self._resume_waits.pop(sid, None)
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        if conn.room is not None:
            await self.fanout.leave(sid, conn.room)
        if conn.role is Role.APP:
            self.metrics.connected_apps.dec()
            return  # req 4.4: an app's pairing survives its disconnect
        if conn.role is not Role.RUNNER or conn.runner_id is None:
            return
        self.metrics.connected_runners.dec()
        if self.shutting_down:
            return
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                await self._release_runner(conn.runner_id, conn.conn_id)
        except STORE_ERRORS as exc:
            # The heartbeat goes stale instead, and a sweeper unpairs within the timeout.
            self.metrics.redis_errors.labels("disconnect").inc()
            log.warning(
                "runner release failed; the sweeper will finish it",
                extra={"runnerId": conn.runner_id, "error": repr(exc)},
            )

    async def _release_runner(self, runner_id: str, conn_id: str) -> None:
        apps = await self.runners.release(runner_id, conn_id)
        if apps is None:
            return  # taken over by a newer registration: nothing to remove
        await self._announce_runner_gone(runner_id, apps, UnpairReason.RUNNER_DISCONNECTED)

    async def runners_stale(self, stale: list[StaleRunner]) -> None:
        """Sweeper's findings: runners whose replica died without running a disconnect."""
        for runner in stale:
            await self._announce_runner_gone(
                runner.runner_id, runner.unpaired_apps, UnpairReason.RUNNER_OFFLINE
            )

    async def _announce_runner_gone(
        self, runner_id: str, apps: list[str], reason: UnpairReason
    ) -> None:
        payload = {"runnerId": runner_id, "reason": reason.value}
        for app in apps:
            await self.fanout.emit(room_for_app(app), ServerEvent.UNPAIRED, payload)
        kind = (
            HistoryEvent.RUNNER_DISCONNECTED
            if reason is UnpairReason.RUNNER_DISCONNECTED
            else HistoryEvent.RUNNER_OFFLINE
        )
        for _ in apps:
            self.metrics.pairings.labels(kind.value).inc()
        # One round trip for all; last, the runner's own entry: whoever reads it finds every
        # unpairing it caused already there.
        entries = [
            NewEntry(
                HistoryEvent.UNPAIRED, app_session_id=app, runner_id=runner_id, reason=reason.value
            )
            for app in apps
        ]
        entries.append(NewEntry(kind, runner_id=runner_id, reason=reason.value))
        await self.history.record_many(entries)

    async def _become_app(self, conn: Conn) -> None:
        if conn.role is Role.APP:
            return
        if conn.role is Role.RUNNER:
            raise GatewayError(ErrorCode.WRONG_ROLE, "this connection is registered as a runner")
        conn.role = Role.APP
        self.metrics.connected_apps.inc()
        room = room_for_app(conn.app_session_id)
        conn.room = room
        waiter = await self.fanout.join(conn.sid, room, confirm=conn.resume_from is not None)
        if conn.resume_from is not None:
            self._resume_waits[conn.sid] = waiter
        if conn.presented:  # a server-assigned id has no older sockets to evict
            await self.fanout.evict(room, conn.sid)

    # -- runner events ----------------------------------------------------------------------

    async def runner_register(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, RegisterPayload, fields_required=True)
        if conn.role is Role.APP:
            raise GatewayError(ErrorCode.WRONG_ROLE, "this connection is an app")
        runner_id = payload.runner_id
        reg = await self.registration.register(
            runner_id,
            conn.conn_id,
            address=conn.address,
            code=payload.pairing_code,
            runner_key=payload.runner_key,
            token_ok=self._token_ok(runner_id, payload.token),
        )
        if reg.status is not RegistrationStatus.REGISTERED:
            raise self._refusal(runner_id, conn, reg)
        assert reg.code is not None and reg.expires_at is not None
        if conn.runner_id is not None and conn.runner_id != runner_id:
            await self.fanout.leave(conn.sid, room_for_runner(conn.runner_id))
            await self._release_runner(conn.runner_id, conn.conn_id)
            conn.peer_apps = None
        resume = payload.last_seq or {}
        if resume and conn.held_back is None:
            conn.held_back = []  # live input waits until the held input is replayed
        try:
            if conn.role is not Role.RUNNER:
                conn.role = Role.RUNNER
                self.metrics.connected_runners.inc()
            conn.runner_id = runner_id
            room = room_for_runner(runner_id)
            conn.room = room
            waiter = await self.fanout.join(conn.sid, room, confirm=bool(resume))
            if reg.previous_owner is not None and reg.previous_owner != conn.conn_id:
                await self.fanout.evict(room, conn.sid)
            if waiter is not None:
                await waiter  # input published for this runner reaches us from here on
            for app, after in resume.items():
                held = await self.relay.held(app, IN, after, paired_with=runner_id)
                if held is not None:
                    await self._replay(conn, app, ServerEvent.TERMINAL_INPUT, after, held)
        finally:
            if resume:
                await self._release_held_back(conn)
        return {
            "success": True,
            "runnerId": runner_id,
            "pairingCode": payload.pairing_code or reg.code,
            "expiresAt": reg.expires_at,
            "heartbeatIntervalMs": int(self.options.heartbeat_interval_s * 1000),
        }

    def _refusal(self, runner_id: str, conn: Conn, reg: Registration) -> GatewayError:
        """The error ack of a refused registration; nothing was changed in the store."""
        if reg.status is RegistrationStatus.RATE_LIMITED:
            return GatewayError(
                ErrorCode.RATE_LIMITED, "too many runner registrations from this address"
            )
        if reg.status is RegistrationStatus.CODE_TAKEN:
            return GatewayError(
                ErrorCode.CODE_TAKEN, "that pairing code is in use by another runner"
            )
        reason = reg.reason or RefusalReason.BAD_TOKEN
        self.metrics.registrations_refused.labels(reason.value.lower()).inc()
        log.warning(
            "runner registration refused",
            extra={"runnerId": runner_id, "address": conn.address, "reason": reason.value},
        )
        return GatewayError(ErrorCode.UNAUTHORIZED, _REFUSALS[reason])

    def _token_ok(self, runner_id: str, token: str | None) -> bool:
        secret = self.options.runner_secret
        if secret is None:
            return True
        expected = hmac.new(secret.encode(), runner_id.encode(), hashlib.sha256).hexdigest()
        return token is not None and hmac.compare_digest(token.lower().encode(), expected.encode())

    def _registered_runner(self, conn: Conn) -> str:
        if conn.role is not Role.RUNNER or conn.runner_id is None:
            raise GatewayError(ErrorCode.NOT_REGISTERED, "send runner:register first")
        return conn.runner_id

    async def runner_heartbeat(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, HeartbeatPayload, fields_required=True)
        if conn.runner_id != payload.runner_id or conn.role is not Role.RUNNER:
            raise GatewayError(
                ErrorCode.NOT_REGISTERED, "this connection has not registered that runnerId"
            )
        if not await self.runners.heartbeat(payload.runner_id, conn.conn_id):
            raise GatewayError(
                ErrorCode.NOT_REGISTERED, "a newer registration of this runner took over"
            )
        return {"success": True}

    async def runner_output(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, OutputPayload, fields_required=True)
        check_depth(payload.data)
        runner_id = self._registered_runner(conn)
        message = {"runnerId": runner_id, "data": payload.data}
        blob = _held_blob(message)
        event = ServerEvent.TERMINAL_OUTPUT.value
        target = payload.app_session_id
        known = conn.peer_apps
        if target is not None:
            apps = [] if known is not None and target not in known else [target]
        else:
            apps = known or []
        for _ in range(_RELAY_ATTEMPTS):
            recipients = [self._recipient(a, room_for_app(a), event) for a in apps]
            result = await self.relay.output(runner_id, target, recipients, blob)
            if result.seqs is not None:
                break
            apps = result.members  # pairings changed since this replica last looked
            if target is None:
                conn.peer_apps = apps
        else:
            raise GatewayError(ErrorCode.UNAVAILABLE, "pairings kept changing; retry")
        for recipient, seq in zip(recipients, result.seqs, strict=True):
            if seq == 0:  # cluster: unpaired between the relay's steps, nothing sent
                continue
            if recipient.channel is None:
                self.fanout.delivered_locally += 1
                room = room_for_app(recipient.app_session_id)
                await self.fanout.deliver_here(room, event, {**message, "seq": seq})
            else:
                self.fanout.published += 1
        return {"success": True, "delivered": sum(1 for seq in result.seqs if seq)}

    def _recipient(self, app: str, room: str, event: str) -> Recipient:
        """Delivered here if the room is here, else published by the relay script."""
        if self.fanout.is_local(room):
            return Recipient(app, None, b"")
        return Recipient(app, self.fanout.channel(room), self.fanout.envelope_prefix(room, event))

    # -- app events ---------------------------------------------------------------------------

    async def app_pair(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, PairPayload, fields_required=True)
        await self._become_app(conn)
        app = conn.app_session_id
        code = payload.pairing_code
        # limit check, redemption, failure count and history: one script, one round trip
        result = await self.pairing.pair(
            code, app, address=conn.address, code_shaped=is_code_shaped(code)
        )
        status = result.status
        if status is PairStatus.RATE_LIMITED:
            raise GatewayError(
                ErrorCode.RATE_LIMITED, "too many failed pairing attempts; try again later"
            )
        if status is PairStatus.INVALID_CODE:
            raise GatewayError(ErrorCode.INVALID_CODE, "unknown, expired or already used code")
        if status is PairStatus.RUNNER_OFFLINE:
            raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the runner is offline")
        runner_id = result.runner_id
        assert runner_id is not None
        previous = result.previous_runner_id
        if previous is not None and previous != runner_id:
            await self.fanout.emit(
                room_for_runner(previous), ServerEvent.APP_UNPAIRED, {"appSessionId": app}
            )
        await self.fanout.emit(
            room_for_runner(runner_id), ServerEvent.PAIRED, {"appSessionId": app}
        )
        self.metrics.pairings.labels("paired").inc()
        conn.peer_runner = runner_id
        return {"success": True, "runnerId": runner_id, "appSessionId": app}

    async def app_unpair(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        decode_args(args, EmptyPayload, fields_required=False)
        await self._become_app(conn)
        app = conn.app_session_id
        conn.peer_runner = None
        previous = await self.pairing.unpair(app)  # history entry included
        if previous is not None:
            await self.fanout.emit(
                room_for_runner(previous), ServerEvent.APP_UNPAIRED, {"appSessionId": app}
            )
            self.metrics.pairings.labels("unpaired").inc()
        return {"success": True}

    async def app_status(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        decode_args(args, EmptyPayload, fields_required=False)
        await self._become_app(conn)
        status = await self.sessions.get_session_status(conn.app_session_id)
        session = status.session
        return {
            "success": True,
            "paired": session is not None,
            "runnerId": None if session is None else session.runner_id,
            "runnerOnline": status.runner_online,
        }

    async def app_command(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, CommandPayload, fields_required=True)
        check_depth(payload.data)
        await self._become_app(conn)
        app = conn.app_session_id
        message = {"appSessionId": app, "data": payload.data}
        blob = _held_blob(message)
        event = ServerEvent.TERMINAL_INPUT.value
        runner = conn.peer_runner
        for _ in range(_RELAY_ATTEMPTS):
            room = room_for_runner(runner) if runner is not None else ""
            recipient = self._recipient(app, room, event) if runner is not None else None
            channel = None if recipient is None else recipient.channel
            prefix = b"" if recipient is None else recipient.prefix
            result = await self.relay.input(app, runner, channel, prefix, blob)
            status = result.status
            if status is InputStatus.NOT_PAIRED:
                conn.peer_runner = None
                raise GatewayError(ErrorCode.NOT_PAIRED, "pair with a runner first")
            if status is InputStatus.RUNNER_OFFLINE:
                raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the paired runner is offline")
            if status is InputStatus.OTHER_RUNNER:
                runner = conn.peer_runner = result.runner_id
                continue
            if channel is None:
                self.fanout.delivered_locally += 1
                await self.fanout.deliver_here(room, event, {**message, "seq": result.seq})
            else:
                self.fanout.published += 1
            return {"success": True}
        raise GatewayError(ErrorCode.UNAVAILABLE, "the pairing kept changing; retry")

    async def app_resize(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        """The app's window size, to its runner as ``terminal:resize`` (not held for resume:
        only the newest size matters, and an app sends it again after a reconnect)."""
        payload = decode_args(args, ResizePayload, fields_required=True)
        await self._become_app(conn)
        app = conn.app_session_id
        status = await self.sessions.get_session_status(app)
        if status.session is None:
            raise GatewayError(ErrorCode.NOT_PAIRED, "pair with a runner first")
        if not status.runner_online:
            raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the paired runner is offline")
        await self.fanout.emit(
            room_for_runner(status.session.runner_id),
            ServerEvent.TERMINAL_RESIZE,
            {"appSessionId": app, "cols": payload.cols, "rows": payload.rows},
        )
        return {"success": True}


def _held_blob(message: dict[str, Any]) -> bytes:
    try:
        return _encode_held(message)
    except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, "data cannot be relayed") from None
