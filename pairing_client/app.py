"""An app's session with one runner: pair with a code (or resume a pairing), run the E2E
handshake, then send input and receive output over reconnects.

The code decides the mode: ``<nameplate>-<secret>`` is end-to-end encrypted (only the
nameplate goes to the gateway), a code without a secret is the plain protocol. After a
pairing the app keeps the pairing key (a file of mode 0600 under ``state_dir``) so that a
restarted app resumes with its appSessionId and re-keys without the code.

The session ends (``ended`` gets ``(status, message)``) when it cannot go on: a refused
pairing or a lost one (1), a wrong code (2), a message that failed authentication (4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import socketio

from .codes import split_code
from .connection import Ack, Connection, Outbox, say
from .e2e.channel import AppChannel, Received
from .e2e.frames import RejectReason
from .state import state_home, write_private

REFUSED = 1
WRONG_CODE = 2
INTEGRITY = 4


@dataclass
class AppConfig:
    url: str
    app_session_id: str | None = None
    #: The runner's code; None resumes the pairing of ``app_session_id``.
    code: str | None = None
    #: Force the plain protocol (a code without a secret is plain anyway).
    plain: bool = False
    #: Where pairing keys are kept (default $XDG_STATE_HOME/pairing-app); None in memory only.
    state_dir: Path | None = None
    ack_timeout: float = 10.0
    min_backoff: float = 0.5
    max_backoff: float = 5.0


class App:
    def __init__(
        self,
        config: AppConfig,
        *,
        on_data: Callable[[Any], None] = lambda data: None,
        on_exit: Callable[[int], None] = lambda status: None,
        on_notice: Callable[[str], None] = say,
    ) -> None:
        self.config = config
        self.app_id = config.app_session_id or secrets.token_urlsafe(18)
        self.on_data = on_data
        self.on_exit = on_exit
        self.notice = on_notice
        #: Every line about the connection (connects, losses, backoff), for a log.
        self.log: Callable[[str], None] = lambda line: None
        #: Called after each reconnect (a plain terminal sends its window size again).
        self.on_reconnected: Callable[[], None] = lambda: None
        self.nameplate: str | None = None
        self.secret: str | None = None
        if config.code is not None:
            self.nameplate, self.secret = split_code(config.code)
            if config.plain:
                self.nameplate, self.secret = "".join(config.code.split()), None
        self.state_dir = config.state_dir or state_home() / "pairing-app"
        self.e2e = self.secret is not None or (
            config.code is None and not config.plain and self._stored() is not None
        )
        self.outbox = Outbox(resend=self.e2e, on_refused=self._refused)
        self.conn = Connection(
            config.url,
            handlers={
                "terminal:output": self._on_output,
                "terminal:gap": self._on_gap,
                "pairing:unpaired": self._on_unpaired,
            },
            on_up=self._up,
            auth=self._auth,
            outbox=self.outbox,
            ack_timeout=config.ack_timeout,
            min_backoff=config.min_backoff,
            max_backoff=config.max_backoff,
            on_line=self._connection_line,
        )
        self.runner_id: str | None = None
        self.paired = False
        self.channel: AppChannel | None = None
        self.last_seq: int | None = None
        #: Set once input can flow: paired, and with E2E the handshake confirmed.
        self.ready = asyncio.Event()
        self.ended: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.reconnects = 0
        #: Events the gateway refused for good (each also told through ``notice``).
        self.refusals = 0

    # -- public ------------------------------------------------------------------------------

    async def run(self) -> tuple[int, str]:
        """Until the session ends (or the task is cancelled): (status, message)."""
        pump = asyncio.create_task(self.outbox.run())
        loop = asyncio.create_task(self.conn.run())
        try:
            return await self._until_ended(loop)
        finally:
            for task in (loop, pump):
                task.cancel()
            for task in (loop, pump):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _until_ended(self, loop: asyncio.Task[bool]) -> tuple[int, str]:
        waiter = asyncio.ensure_future(asyncio.shield(self.ended))
        pending: set[asyncio.Future[Any]] = {loop, waiter}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if loop.done() and not self.ended.done():
            waiter.cancel()
            loop.result()  # the loop failed: its exception
        return await waiter

    def send(self, data: bytes | str) -> None:
        if self.channel is not None:
            self.channel.send_data(data.encode() if isinstance(data, str) else data)
        else:
            self.outbox.put("app:command", {"data": data})

    def resize(self, cols: int, rows: int) -> None:
        if self.channel is not None:
            self.channel.send_resize(cols, rows)
        elif self.paired:
            self.outbox.put("app:resize", {"cols": cols, "rows": rows})

    def end(self, status: int, message: str) -> None:
        if not self.ended.done():
            self.ended.set_result((status, message))

    def _connection_line(self, line: str) -> None:
        self.log(line)
        if line.startswith("cannot connect") and not self.paired:
            self.end(REFUSED, line)
        elif line.startswith("connection lost: ") and self.paired and not self.ended.done():
            reason = line.removeprefix("connection lost: ")
            if reason != "client disconnect":  # not our own closing
                self.notice(f"connection lost ({reason}); reconnecting")

    # -- state -------------------------------------------------------------------------------

    def _state_file(self) -> Path:
        return self.state_dir / f"{self.app_id}.json"

    def _stored(self) -> dict[str, Any] | None:
        if self.config.app_session_id is None:
            return None
        try:
            entry = json.loads(self._state_file().read_text())
        except (FileNotFoundError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None

    def _store(self) -> None:
        keys = self.channel.keys if self.channel is not None else None
        if keys is None or self.runner_id is None:
            return
        entry = {
            "runnerId": self.runner_id,
            "keyId": keys.pairing_key_id.hex(),
            "key": keys.pairing_key.hex(),
        }
        write_private(self._state_file(), json.dumps(entry))

    # -- connection --------------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        """On every (re)connect: resume from the newest output written."""
        auth: dict[str, Any] = {"appSessionId": self.app_id}
        if self.paired:
            auth["lastSeq"] = self.last_seq or 0
        return auth

    async def _call(self, sio: socketio.AsyncClient, event: str, data: Any = None) -> Ack:
        ack = await sio.call(
            event, data if data is not None else {}, timeout=self.config.ack_timeout
        )
        return ack if isinstance(ack, dict) else {}

    async def _up(self, sio: socketio.AsyncClient) -> bool:
        if self.paired:
            status = await self._call(sio, "app:status")
            if not status.get("paired"):
                self.end(REFUSED, "the pairing is gone (the gateway lost its store?)")
                return False
            self.reconnects += 1
            self.notice("reconnected")
            self.on_reconnected()
            return True
        if self.nameplate is not None:
            ack = await self._call(sio, "app:pair", {"pairingCode": self.nameplate})
            if not ack.get("success"):
                self.end(REFUSED, f"pairing refused: {ack.get('error')} ({ack.get('message')})")
                return False
            self.runner_id = ack["runnerId"]
            self.app_id = ack.get("appSessionId", self.app_id)
        else:
            status = await self._call(sio, "app:status")
            if not status.get("paired"):
                self.end(REFUSED, "not paired: pair with the runner's code (--code)")
                return False
            self.runner_id = status.get("runnerId")
        self.paired = True
        if not self.e2e:
            self.ready.set()
            return True
        assert self.runner_id is not None
        self.channel = AppChannel(
            self._send_frame, app_session_id=self.app_id, runner_id=self.runner_id
        )
        if self.secret is not None and self.nameplate is not None:
            self.channel.start(nameplate=self.nameplate, secret=self.secret)
        else:
            stored = self._stored()
            if stored is None or stored.get("runnerId") != self.runner_id:
                self.end(REFUSED, "no pairing key for this pairing: pair again with a new code")
                return False
            self.channel.start_rekey(
                pairing_key=bytes.fromhex(stored["key"]),
                pairing_key_id=bytes.fromhex(stored["keyId"]),
            )
        return True

    def _send_frame(self, frame: bytes) -> None:
        self.outbox.put("app:command", {"data": frame})

    def _refused(self, event: str, ack: Ack) -> None:
        self.refusals += 1
        self.notice(f"{event} refused: {ack.get('error')} ({ack.get('message')})")

    # -- incoming ----------------------------------------------------------------------------

    async def _on_output(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        seq = msg.get("seq")
        if isinstance(seq, int):
            if self.last_seq is not None and seq <= self.last_seq:
                return  # already handled (a replay overlapping what came live)
            self.last_seq = seq
        data = msg.get("data")
        if self.channel is None:
            if isinstance(data, dict) and isinstance(data.get("exit"), int):
                self.on_exit(data["exit"])
            else:
                self.on_data(data)
            return
        if isinstance(data, bytes):
            self._handle(self.channel.receive(data))

    async def _on_gap(self, msg: Any) -> None:
        missed = msg.get("missed") if isinstance(msg, dict) else "?"
        if self.channel is not None:
            self._handle(self.channel.gap())
        self.notice(f"{missed} output messages were lost; redraw with Ctrl-L")

    async def _on_unpaired(self, msg: Any) -> None:
        msg = msg if isinstance(msg, dict) else {}
        self.end(REFUSED, f"unpaired from runner {msg.get('runnerId')}: {msg.get('reason')}")

    def _handle(self, got: Received) -> None:
        assert self.channel is not None
        if got.confirmed:
            self._store()
            self.ready.set()
        if got.integrity:
            self.end(
                INTEGRITY,
                f"a message from the runner failed authentication ({got.integrity}): "
                "altered in transit, not shown; session ended",
            )
            return
        if got.rejected is RejectReason.WRONG_CODE:
            self.end(
                WRONG_CODE,
                "the pairing code was wrong (key confirmation failed); the runner shows a new code",
            )
            return
        if got.rejected is RejectReason.UNKNOWN_KEY:
            self.end(REFUSED, "the runner does not know this pairing: pair again with a new code")
            return
        if got.rejected is RejectReason.INTEGRITY:
            self.end(
                INTEGRITY,
                "the runner received a message that failed authentication (altered in transit); "
                "session ended",
            )
            return
        if got.rejected is RejectReason.NO_SESSION:
            stored = self._stored() if self.channel.keys is None else None
            keys = self.channel.keys
            if keys is not None:
                self.notice("the runner lost the session: re-keying")
                self.channel.start_rekey(
                    pairing_key=keys.pairing_key, pairing_key_id=keys.pairing_key_id
                )
            elif stored is None:
                self.end(REFUSED, "the runner has no session for this app: pair again")
            return
        if got.lost:
            self.notice(f"{got.lost} output messages were lost; redraw with Ctrl-L")
        for data in got.data:
            self.on_data(data)
        for control in got.controls:
            if isinstance(control.get("exit"), int):
                self.on_exit(control["exit"])
