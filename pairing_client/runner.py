"""A runner: registers, heartbeats, answers its apps (echo, commands, or a terminal per app),
and reconnects; by default end to end encrypted (``e2e=False``: the plain protocol).

With E2E the printed code is ``<nameplate>-<secret>``: the secret is made here for each
registration and never leaves this process except in that line. Each app runs the handshake
over the relay; a wrong secret burns the code (the app is refused, a new code is registered
and printed). Records that were not acked when a connection died are sent again on the next
one; the apps drop what they already have by the record counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import socketio

from .codes import format_code, make_secret
from .connection import Ack, Connection, Outbox, say
from .e2e.channel import CodeBook, Received, RunnerChannel
from .pty import Shell
from .state import PairingStore

Mode = Literal["echo", "exec", "pty"]
#: runner:register takes at most this many lastSeq entries.
MAX_RESUME = 256


@dataclass
class RunnerConfig:
    url: str
    runner_id: str
    runner_key: str | None = None
    #: The gateway's auth.runner_secret, if it has one (for the register token).
    auth_secret: str | None = None
    proposed_code: str | None = None
    mode: Mode = "echo"
    e2e: bool = True
    shell: list[str] = field(default_factory=lambda: [os.environ.get("SHELL") or "/bin/sh"])
    term: str = "xterm-256color"
    exec_timeout: float = 30.0
    ack_timeout: float = 10.0
    min_backoff: float = 1.0
    max_backoff: float = 30.0
    #: Where the pairing keys are kept for re-keying after a restart (None: memory only).
    pairings_file: Path | None = None


class Runner:
    def __init__(self, config: RunnerConfig, on_line: Callable[[str], None] = say) -> None:
        self.config = config
        self.say = on_line
        self.outbox = Outbox(resend=config.e2e or config.mode == "pty", on_refused=self._refused)
        self.conn = Connection(
            config.url,
            handlers={
                "terminal:input": self._on_input,
                "terminal:resize": self._on_resize,
                "terminal:gap": self._on_gap,
                "pairing:paired": self._on_paired,
                "pairing:app_unpaired": self._on_unpaired,
            },
            on_up=self._registered,
            outbox=self.outbox,
            ack_timeout=config.ack_timeout,
            min_backoff=config.min_backoff,
            max_backoff=config.max_backoff,
            on_line=on_line,
        )
        self.codes = CodeBook()
        self.pairings = PairingStore(config.pairings_file)
        self.channels: dict[str, RunnerChannel] = {}
        self.shells: dict[str, Shell] = {}
        #: Newest seq of terminal:input seen per app (resume: runner:register's lastSeq).
        self.last_seq: dict[str, int] = {}
        self.inputs: asyncio.Queue[tuple[str, bytes | str]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.code: str | None = None
        self.code_changed = asyncio.Event()
        #: Apps told (in the log) that their unencrypted input is ignored.
        self.plain_apps: set[str] = set()

    # -- life cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        pump = asyncio.create_task(self.outbox.run())
        worker = asyncio.create_task(self._worker())
        try:
            await self.conn.run()
        finally:
            pump.cancel()
            worker.cancel()
            await self.close()

    async def close(self) -> None:
        for shell in list(self.shells.values()):
            shell.hang_up()
        senders = [s.sender for s in self.shells.values()]
        for task in [*senders, *self.tasks]:
            task.cancel()
        for task in [*senders, *self.tasks]:
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- registration and heartbeat ----------------------------------------------------------

    def _register_payload(self) -> dict[str, Any]:
        cfg = self.config
        payload: dict[str, Any] = {"runnerId": cfg.runner_id}
        if cfg.runner_key:
            payload["runnerKey"] = cfg.runner_key
        resume = self.resume_from()
        if resume:
            payload["lastSeq"] = resume
        if cfg.proposed_code:
            payload["pairingCode"] = cfg.proposed_code
        if cfg.auth_secret:
            key = cfg.auth_secret.encode()
            payload["token"] = hmac.new(key, cfg.runner_id.encode(), hashlib.sha256).hexdigest()
        return payload

    def resume_from(self) -> dict[str, int]:
        """lastSeq for every app served here (0: none of its input yet), newest last."""
        apps = {app: 0 for app in [*self.shells, *self.channels]}
        apps.update(self.last_seq)
        return dict(list(apps.items())[-MAX_RESUME:])

    async def _register(self, sio: socketio.AsyncClient) -> Ack | None:
        ack = await sio.call(
            "runner:register", self._register_payload(), timeout=self.config.ack_timeout
        )
        if not isinstance(ack, dict) or not ack.get("success"):
            err = ack if isinstance(ack, dict) else {}
            self.say(f"register refused: {err.get('error')} {err.get('message')}")
            return None
        nameplate = ack["pairingCode"]
        if self.config.e2e:
            secret = make_secret()
            self.codes.issue(nameplate, secret)
            self.code = format_code(nameplate, secret)
        else:
            self.code = nameplate
        self.code_changed.set()
        self.say(f"pairing code: {self.code}  (runner {self.config.runner_id})")
        return ack

    async def _registered(self, sio: socketio.AsyncClient) -> bool:
        ack = await self._register(sio)
        if ack is None:
            return False
        self._spawn(self._heartbeat(sio, ack.get("heartbeatIntervalMs", 10000) / 1000))
        return True

    async def _heartbeat(self, sio: socketio.AsyncClient, interval_s: float) -> None:
        while self.conn.sio is sio:
            await asyncio.sleep(interval_s)
            if self.conn.sio is not sio:
                return
            try:
                ack = await sio.call(
                    "runner:heartbeat",
                    {"runnerId": self.config.runner_id},
                    timeout=self.config.ack_timeout,
                )
            except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
                self.say(f"connection failed: {exc!r}")
                self.conn.drop(sio)
                return
            if not isinstance(ack, dict) or not ack.get("success"):
                err = ack if isinstance(ack, dict) else {}
                self.say(f"heartbeat refused: {err.get('error')} {err.get('message')}")
                self.conn.drop(sio)
                return

    async def _new_code(self) -> None:
        """After a wrong secret: a new nameplate (the old one is spent) and a new secret."""
        sio = self.conn.sio
        if sio is None:
            return  # the next connection registers anyway
        with contextlib.suppress(TimeoutError, socketio.exceptions.SocketIOError):
            await self._register(sio)

    # -- incoming events ---------------------------------------------------------------------

    def _fresh(self, msg: dict[str, Any]) -> bool:
        """Whether an input is new (a replay after a resume may repeat what came already)."""
        app, seq = msg.get("appSessionId"), msg.get("seq")
        if not isinstance(app, str) or not isinstance(seq, int):
            return True
        if seq <= self.last_seq.get(app, 0):
            return False
        self.last_seq[app] = seq
        return True

    async def _on_input(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        app, data = msg.get("appSessionId"), msg.get("data")
        if not isinstance(app, str) or not self._fresh(msg):
            return
        if not self.config.e2e:
            self._plain_input(app, data)
            return
        if not isinstance(data, bytes):
            # Not a record: never typed. An app that does not encrypt needs a --plain runner.
            if app not in self.plain_apps:
                self.plain_apps.add(app)
                self.say(f"app {app}: sent unencrypted data, ignored (this runner encrypts)")
            return
        self._handle(app, self.channel(app).receive(data))

    def _plain_input(self, app: str, data: Any) -> None:
        if self.config.mode == "pty":
            if isinstance(data, str):
                data = data.encode()
            if isinstance(data, bytes):
                self.shell(app).write(data)
        else:
            self.inputs.put_nowait((app, data if isinstance(data, bytes | str) else str(data)))

    def channel(self, app: str) -> RunnerChannel:
        chan = self.channels.get(app)
        if chan is None:

            def send(frame: bytes) -> None:
                self.outbox.put("runner:output", {"data": frame, "appSessionId": app})

            def pairing_key(key_id: bytes) -> bytes | None:
                return self._pairing_key(app, key_id)

            chan = self.channels[app] = RunnerChannel(
                send,
                app_session_id=app,
                runner_id=self.config.runner_id,
                codes=self.codes,
                pairing_key=pairing_key,
            )
        return chan

    def _pairing_key(self, app: str, key_id: bytes) -> bytes | None:
        entry = self.pairings.get(app)
        if entry is None:
            return None
        if not hmac.compare_digest(bytes.fromhex(entry["keyId"]), key_id):
            return None
        return bytes.fromhex(entry["key"])

    def _handle(self, app: str, got: Received) -> None:
        chan = self.channels[app]
        if got.confirmed and chan.keys is not None:
            self.pairings.put(
                app,
                {"keyId": chan.keys.pairing_key_id.hex(), "key": chan.keys.pairing_key.hex()},
            )
            self.say(f"app {app}: end-to-end encrypted session")
            if self.config.mode == "pty":
                self.shell(app)
        if got.burnt:
            self.say(f"app {app}: wrong code (key confirmation failed): refused; new code follows")
            self._spawn(self._new_code())
        elif got.rejected is not None and got.error:
            self.say(f"app {app}: {got.error}")
        if got.integrity:
            self.say(f"app {app}: {got.integrity} (altered in transit?): not typed; session closed")
        if got.lost:
            self.say(f"app {app}: {got.lost} inputs were lost")
        for size in got.resizes:
            if self.config.mode == "pty":
                self.shell(app).resize(*size)
        for data in got.data:
            if self.config.mode == "pty":
                self.shell(app).write(data)
            else:
                self.inputs.put_nowait((app, data))

    async def _on_resize(self, msg: Any) -> None:
        if not isinstance(msg, dict) or self.config.mode != "pty" or self.config.e2e:
            return
        app, cols, rows = msg.get("appSessionId"), msg.get("cols"), msg.get("rows")
        if isinstance(app, str) and isinstance(cols, int) and isinstance(rows, int):
            self.shell(app).resize(cols, rows)

    async def _on_gap(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        app = msg.get("appSessionId")
        self.say(f"app {app}: {msg.get('missed')} inputs were lost")
        if isinstance(app, str) and app in self.channels:
            self._handle(app, self.channels[app].gap())

    async def _on_paired(self, msg: Any) -> None:
        if isinstance(msg, dict) and isinstance(msg.get("appSessionId"), str):
            app = msg["appSessionId"]
            self.say(f"paired with app {app}")
            # A new pairing of this app (maybe with a new code after a wrong one): a handshake
            # follows; forget the old session, unless that handshake has already begun.
            chan = self.channels.get(app)
            if chan is not None and (chan.open or chan.refused or chan.handshake is None):
                del self.channels[app]

    async def _on_unpaired(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("appSessionId"), str):
            return
        app = msg["appSessionId"]
        self.say(f"app {app} unpaired")
        shell = self.shells.get(app)
        if shell is not None:
            shell.hang_up()
        self.last_seq.pop(app, None)
        self.channels.pop(app, None)
        self.pairings.drop(app)

    def _refused(self, event: str, ack: Ack) -> None:
        self.say(f"{event} refused: {ack.get('error')} {ack.get('message')}")

    # -- answering ---------------------------------------------------------------------------

    def _send(self, app: str, data: bytes | str) -> None:
        if self.config.e2e:
            chan = self.channels.get(app)
            if chan is not None and chan.open:
                chan.send_data(data.encode() if isinstance(data, str) else data)
        else:
            self.outbox.put("runner:output", {"data": data, "appSessionId": app})

    async def _worker(self) -> None:
        """echo and exec: one answer per input, in order."""
        while True:
            app, data = await self.inputs.get()
            text = data.decode(errors="replace") if isinstance(data, bytes) else data
            self._send(app, await self.answer(text))

    async def answer(self, command: str) -> str:
        if self.config.mode != "exec":
            return f"echo: {command}"
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.config.exec_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"timed out after {self.config.exec_timeout} s"
        return output.decode(errors="replace")

    # -- terminals ---------------------------------------------------------------------------

    def shell(self, app: str) -> Shell:
        shell = self.shells.get(app)
        if shell is None or shell.ended:

            async def emit(chunk: bytes) -> None:
                await self.outbox.room()
                if self.config.e2e:
                    chan = self.channels.get(app)
                    if chan is not None and chan.open:
                        chan.send_data(chunk)
                else:
                    self.outbox.put("runner:output", {"data": chunk, "appSessionId": app})

            async def exited(status: int) -> None:
                if self.config.e2e:
                    chan = self.channels.get(app)
                    if chan is not None and chan.open:
                        chan.send_control({"exit": status})
                else:
                    self.outbox.put(
                        "runner:output", {"data": {"exit": status}, "appSessionId": app}
                    )

            shell = self.shells[app] = Shell(self.config.shell, self.config.term, emit, exited)
            shell.sender.add_done_callback(functools.partial(self._gone, app, shell))
            self.say(f"shell {shell.pid} started for app {app}")
        return shell

    def _gone(self, app: str, shell: Shell, _: object = None) -> None:
        if self.shells.get(app) is shell:
            del self.shells[app]
        self.say(f"shell {shell.pid} of app {app} ended")
