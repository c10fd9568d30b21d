"""One app-runner E2E session as a state machine without I/O: frames in, frames out (through
a ``send`` callback), and what the application should do (a ``Received``).

The app and the runner client libraries drive it; tests drive two of them back to back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .frames import RECORD_TYPES, FrameError, FrameType, RejectReason, frame_type
from .handshake import (
    AppHandshake,
    HandshakeError,
    RunnerHandshake,
    SessionKeys,
    reject,
    reject_reason,
)
from .records import IntegrityError, Opener, Sealer, UnknownKeyError

Send = Callable[[bytes], None]


@dataclass
class Received:
    """What one incoming frame (or a gap) means for the application."""

    data: list[bytes] = field(default_factory=list)
    resizes: list[tuple[int, int]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    lost: int = 0
    confirmed: bool = False
    #: (runner) a wrong secret spent the code: register again for a new one.
    burnt: bool = False
    rejected: RejectReason | None = None
    integrity: str | None = None
    error: str | None = None


def _json(plain: bytes) -> Any:
    try:
        return json.loads(plain)
    except ValueError:
        return None


class _Records:
    """The record layer of an open session, in one role."""

    def __init__(self, keys: SessionKeys, *, app: bool) -> None:
        self.keys = keys
        out_key, in_key = (
            (keys.app_to_runner, keys.runner_to_app)
            if app
            else (keys.runner_to_app, keys.app_to_runner)
        )
        self.sealer = Sealer(out_key, keys.key_id)
        self.opener = Opener(in_key, keys.key_id)

    def open(self, frame: bytes, out: Received) -> None:
        opened = self.opener.open(frame)
        out.lost += opened.lost
        _deliver(opened.records, out)


def _deliver(records: list[tuple[FrameType, bytes]], out: Received) -> None:
    for kind, plain in records:
        if kind is FrameType.DATA:
            out.data.append(plain)
        elif kind is FrameType.RESIZE:
            size = _json(plain)
            if (
                isinstance(size, dict)
                and isinstance(size.get("cols"), int)
                and isinstance(size.get("rows"), int)
            ):
                out.resizes.append((size["cols"], size["rows"]))
        else:
            control = _json(plain)
            if isinstance(control, dict):
                out.controls.append(control)


class _Channel:
    def __init__(self, send: Send, *, app: bool) -> None:
        self._send = send
        self._app = app
        self.records: _Records | None = None
        self._waiting: list[tuple[FrameType, bytes]] = []

    @property
    def open(self) -> bool:
        return self.records is not None

    @property
    def keys(self) -> SessionKeys | None:
        return self.records.keys if self.records is not None else None

    def seal(self, kind: FrameType, plain: bytes) -> None:
        """Send a record now, or once the handshake is done."""
        if self.records is None:
            self._waiting.append((kind, plain))
        else:
            self._send(self.records.sealer.seal(kind, plain))

    def send_data(self, data: bytes) -> None:
        self.seal(FrameType.DATA, data)

    def send_control(self, control: dict[str, Any]) -> None:
        self.seal(FrameType.CONTROL, json.dumps(control, separators=(",", ":")).encode())

    def gap(self) -> Received:
        """The gateway announced messages lost for good (terminal:gap)."""
        out = Received()
        if self.records is not None:
            opened = self.records.opener.skip_gap()
            out.lost += opened.lost
            _deliver(opened.records, out)
        return out

    def _opened(self, keys: SessionKeys) -> None:
        self.records = _Records(keys, app=self._app)
        waiting, self._waiting = self._waiting, []
        for kind, plain in waiting:
            self.seal(kind, plain)


class AppChannel(_Channel):
    """The app's end: start a handshake, then records both ways."""

    def __init__(self, send: Send, *, app_session_id: str, runner_id: str) -> None:
        super().__init__(send, app=True)
        self.app_session_id = app_session_id
        self.runner_id = runner_id
        self.handshake: AppHandshake | None = None
        self.failed: RejectReason | None = None

    def start(self, *, nameplate: str, secret: str) -> None:
        self.handshake = AppHandshake(
            app_session_id=self.app_session_id,
            runner_id=self.runner_id,
            secret=secret,
            nameplate=nameplate,
        )
        self._send(self.handshake.hello())

    def start_rekey(self, *, pairing_key: bytes, pairing_key_id: bytes) -> None:
        self.handshake = AppHandshake(
            app_session_id=self.app_session_id,
            runner_id=self.runner_id,
            pairing_key=pairing_key,
            pairing_key_id=pairing_key_id,
        )
        self._send(self.handshake.hello())

    def send_resize(self, cols: int, rows: int) -> None:
        self.seal(FrameType.RESIZE, json.dumps({"cols": cols, "rows": rows}).encode())

    def receive(self, frame: bytes) -> Received:
        out = Received()
        try:
            kind = frame_type(frame)
            if kind in RECORD_TYPES:
                if self.records is None:
                    out.error = "a record before the handshake finished"
                else:
                    self.records.open(frame, out)
            elif kind is FrameType.RESPONSE and self.handshake is not None and not self.open:
                if not self.handshake.finished:  # a repeated RESPONSE is not answered again
                    self._send(self.handshake.on_response(frame))
            elif kind is FrameType.CONFIRM and self.handshake is not None and not self.open:
                self._opened(self.handshake.on_confirm(frame))
                out.confirmed = True
            elif kind is FrameType.REJECT:
                out.rejected = self.failed = reject_reason(frame)
                if out.rejected is not RejectReason.NO_SESSION:
                    self.records = None
        except HandshakeError as exc:
            out.rejected = self.failed = exc.reason
            out.error = str(exc)
        except IntegrityError as exc:
            out.integrity = str(exc)
        except UnknownKeyError:
            out.error = "a record under a key of an earlier session (dropped)"
        except FrameError as exc:
            out.error = str(exc)
        return out


class CodeBook:
    """The runner's current code: its secret is good for one key confirmation, in total."""

    def __init__(self) -> None:
        self.nameplate: str | None = None
        self.secret: str | None = None
        self.generation = 0

    def issue(self, nameplate: str, secret: str) -> None:
        self.nameplate, self.secret = nameplate, secret
        self.generation += 1

    def spend(self, generation: int) -> bool:
        """Take the secret for one attempt; False if it is spent or was replaced."""
        if generation != self.generation or self.secret is None:
            return False
        self.secret = None
        return True


class RunnerChannel(_Channel):
    """The runner's end for one app."""

    def __init__(
        self,
        send: Send,
        *,
        app_session_id: str,
        runner_id: str,
        codes: CodeBook,
        pairing_key: Callable[[bytes], bytes | None],
    ) -> None:
        super().__init__(send, app=False)
        self.app_session_id = app_session_id
        self.runner_id = runner_id
        self.codes = codes
        self.pairing_key = pairing_key
        self.handshake: RunnerHandshake | None = None
        self._generation = 0
        #: This app spent a code with a wrong secret: nothing more from it is answered.
        self.refused = False
        self._told_no_session = False
        self._finished: bytes | None = None

    def receive(self, frame: bytes) -> Received:
        out = Received()
        if self.refused:
            return out
        try:
            kind = frame_type(frame)
            if kind in RECORD_TYPES:
                self._record(frame, out)
            elif kind in (FrameType.HELLO, FrameType.REKEY_HELLO):
                self._hello(frame, kind)
            elif kind is FrameType.FINISH and self.handshake is not None:
                self._finish(frame, out)
        except HandshakeError as exc:
            out.rejected = exc.reason
            out.error = str(exc)
            self._send(reject(exc.reason))
            if exc.reason is RejectReason.WRONG_CODE:
                self.refused = True
                self.records = None
        except FrameError as exc:
            out.error = str(exc)
        return out

    def _hello(self, frame: bytes, kind: FrameType) -> None:
        if self.handshake is not None and self.handshake.hello == frame:
            return  # a resend of the HELLO already answered
        if kind is FrameType.REKEY_HELLO:
            key_id = frame[3 + 16 :]
            self.handshake = RunnerHandshake(
                frame,
                app_session_id=self.app_session_id,
                runner_id=self.runner_id,
                pairing_key=self.pairing_key(key_id),
            )
            self._generation = -1
        else:
            if self.codes.secret is None or self.codes.nameplate is None:
                raise HandshakeError(RejectReason.WRONG_CODE, "the code is spent")
            self.handshake = RunnerHandshake(
                frame,
                app_session_id=self.app_session_id,
                runner_id=self.runner_id,
                secret=self.codes.secret,
                nameplate=self.codes.nameplate,
            )
            self._generation = self.codes.generation
        self._finished = None
        self._send(self.handshake.response)

    def _finish(self, frame: bytes, out: Received) -> None:
        assert self.handshake is not None
        if self._finished == frame:
            return  # a resend of the FINISH already answered
        if self._generation >= 0:
            if not self.codes.spend(self._generation):
                raise HandshakeError(RejectReason.WRONG_CODE, "the code is spent")
            try:
                confirm, keys = self.handshake.on_finish(frame)
            except HandshakeError:
                out.burnt = True
                raise
        else:
            confirm, keys = self.handshake.on_finish(frame)
        self._finished = bytes(frame)
        self._send(confirm)
        self._told_no_session = False
        self._opened(keys)
        out.confirmed = True

    def _record(self, frame: bytes, out: Received) -> None:
        if self.records is None:
            self._no_session(out)
            return
        try:
            self.records.open(frame, out)
        except UnknownKeyError:
            self._no_session(out)
        except IntegrityError as exc:
            out.integrity = str(exc)
            self._send(reject(RejectReason.INTEGRITY))
            self.records = None

    def _no_session(self, out: Received) -> None:
        out.error = "a record for a session this runner does not hold"
        if not self._told_no_session:
            self._told_no_session = True
            self._send(reject(RejectReason.NO_SESSION))
