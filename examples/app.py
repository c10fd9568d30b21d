#!/usr/bin/env python3
"""An app for the pairing gateway: pairs with a runner by its code, sends commands, prints
the output; without commands, it is a terminal on the runner (``runner.py --pty``).

    python examples/app.py --url http://127.0.0.1:8080 --code K7M2P9QXRT "ls -la" "uptime"
    python examples/app.py --url http://127.0.0.1:8080 --code K7M2P9QXRT

A real app keeps its ``appSessionId`` (here ``--app-session-id``; a random one otherwise)
and presents it again after a reconnect: its pairing is still there, so it only pairs once.
Exit status: 0 when every command got its output, 1 when the gateway refused something,
3 when output was missing after ``--wait`` seconds.

As a terminal it puts the local tty in raw mode, sends each keystroke as it is typed
(binary ``app:command``), writes the shell's output as it arrives, and sends the window size
(``app:resize``) at start and on every change. It reconnects by itself after a network drop
or a gateway restart, presenting its ``appSessionId`` and the ``seq`` of the last output it
wrote (``auth.lastSeq``), so that a gateway that holds output resends only what it missed
(output it no longer held comes as ``terminal:gap``, shown as a notice).
Type ``~.`` at the start of a line to leave (``~~`` sends one ``~``), as with ssh. Exit
status: 0 when the remote shell exited, the shell's status when it was not 0, 255 when left
with ``~.``, 128 + N on signal N, 1 when the gateway refused or the pairing ended. The local
terminal is restored on every exit path.

Needs python-socketio[asyncio_client] (installed with the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import termios
import tty
from typing import Any

import socketio


def say(*parts: Any) -> None:
    print(*parts, flush=True)


async def main(args: argparse.Namespace) -> int:
    if not args.commands:
        return await Terminal(args).run()
    sio = socketio.AsyncClient(reconnection=False)
    outputs: asyncio.Queue[Any] = asyncio.Queue()

    # ``*_``: with socketio.connection_state_recovery on, events carry one more argument.
    @sio.on("terminal:output")
    async def on_output(msg: dict[str, Any], *_: Any) -> None:
        outputs.put_nowait(msg["data"])

    @sio.on("pairing:unpaired")
    async def on_unpaired(msg: dict[str, Any], *_: Any) -> None:
        say(f"unpaired from runner {msg['runnerId']}: {msg['reason']}")

    auth = {"appSessionId": args.app_session_id or secrets.token_urlsafe(18)}
    try:
        await sio.connect(args.url, auth=auth, transports=["websocket"], wait_timeout=args.wait)
    except socketio.exceptions.ConnectionError as exc:
        say(f"cannot connect to {args.url}: {exc}")
        await sio.shutdown()
        return 1
    try:
        if args.code:
            ack = await sio.call("app:pair", {"pairingCode": args.code}, timeout=args.wait)
            if not ack.get("success"):
                say(f"pairing refused: {ack['error']} ({ack['message']})")
                return 1
            say(f"paired with runner {ack['runnerId']} as app {ack['appSessionId']}")
        for command in args.commands:
            ack = await sio.call("app:command", {"data": command}, timeout=args.wait)
            if not ack.get("success"):
                say(f"command refused: {ack['error']} ({ack['message']})")
                return 1
        for _ in args.commands:  # one output per command from the example runner
            try:
                data = await asyncio.wait_for(outputs.get(), args.wait)
            except TimeoutError:
                say(f"no output within {args.wait} s")
                return 3
            text = data if isinstance(data, str) else repr(data)
            print(text, end="" if text.endswith("\n") else "\n", flush=True)
        return 0
    finally:
        await sio.disconnect()  # the pairing stays: reconnect with the same id to resume
        await sio.shutdown()


class Terminal:
    """The local tty as a terminal on the runner's shell."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.app_id = args.app_session_id or secrets.token_urlsafe(18)
        self.sio = socketio.AsyncClient(
            reconnection=True, reconnection_delay=0.5, reconnection_delay_max=5
        )
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self.done: asyncio.Future[int] | None = None
        #: seq of the newest terminal:output written (None until the gateway sends seq).
        self.last_seq: int | None = None
        self.at_line_start = True
        self.tilde = False
        #: Keystrokes and sizes to emit, in order (they wait here while disconnected).
        self.outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.up = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.paired = False

    def auth(self) -> dict[str, Any]:
        """Called on every (re)connect: resume from the newest output written."""
        auth: dict[str, Any] = {"appSessionId": self.app_id}
        if self.paired:
            auth["lastSeq"] = self.last_seq or 0
        return auth

    def notice(self, text: str) -> None:
        """A line of our own on the terminal (raw mode: CR LF)."""
        os.write(self.stdout, f"\r\n[app: {text}]\r\n".encode())

    def finish(self, status: int) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(status)

    def _signalled(self, sig: signal.Signals) -> None:
        self.notice(f"ended by {sig.name}")
        self.finish(128 + sig)

    async def run(self) -> int:
        if not os.isatty(self.stdin):
            say("without commands the app is a terminal: run it in one (stdin is not a tty)")
            return 1
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self._handlers()
        try:
            await self.sio.connect(
                self.args.url, auth=self.auth, transports=["websocket"], wait_timeout=self.args.wait
            )
        except socketio.exceptions.ConnectionError as exc:
            say(f"cannot connect to {self.args.url}: {exc}")
            await self.sio.shutdown()
            return 1
        saved = termios.tcgetattr(self.stdin)
        try:
            if self.args.code:
                ack = await self.sio.call(
                    "app:pair", {"pairingCode": self.args.code}, timeout=self.args.wait
                )
                if not ack.get("success"):
                    say(f"pairing refused: {ack['error']} ({ack['message']})")
                    return 1
                say(f"paired with runner {ack['runnerId']} as app {ack['appSessionId']}")
                say("escape sequence: ~. at the start of a line")
            self.paired = True
            tty.setraw(self.stdin, termios.TCSANOW)  # keys typed ahead are kept, and sent
            loop.add_reader(self.stdin, self._typed)
            loop.add_signal_handler(signal.SIGWINCH, self._window_changed)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled, sig)
            self._window_changed()
            self.up.set()
            pump = asyncio.create_task(self._pump())
            try:
                return await self.done
            finally:
                pump.cancel()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.stdin)
            for sig in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.remove_signal_handler(sig)
            termios.tcsetattr(self.stdin, termios.TCSAFLUSH, saved)
            await self.sio.disconnect()
            await self.sio.shutdown()

    def _handlers(self) -> None:
        sio = self.sio

        @sio.on("terminal:output")
        async def on_output(msg: dict[str, Any], *_: Any) -> None:
            seq = msg.get("seq")
            if isinstance(seq, int):
                if self.last_seq is not None and seq <= self.last_seq:
                    return  # already written (a replay overlapping what came live)
                self.last_seq = seq
            data = msg.get("data")
            if isinstance(data, str):
                data = data.encode()
            if isinstance(data, bytes):
                view = memoryview(data)
                while view:
                    view = view[os.write(self.stdout, view) :]
            elif isinstance(data, dict) and isinstance(data.get("exit"), int):
                self.finish(data["exit"])

        @sio.on("terminal:gap")
        async def on_gap(msg: dict[str, Any], *_: Any) -> None:
            # Output the gateway no longer held for this resume: the screen may be off.
            self.notice(f"{msg.get('missed')} output messages were lost; redraw with Ctrl-L")

        @sio.on("pairing:unpaired")
        async def on_unpaired(msg: dict[str, Any], *_: Any) -> None:
            self.notice(f"unpaired from runner {msg['runnerId']}: {msg['reason']}")
            self.finish(1)

        @sio.event
        async def connect() -> None:
            if self.paired:  # a reconnect (handled in a task: it waits for an ack)
                task = asyncio.create_task(self._reconnected())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        @sio.event
        async def disconnect(reason: Any = None) -> None:
            self.up.clear()
            if self.paired and self.done is not None and not self.done.done():
                self.notice(f"connection lost ({reason}); reconnecting")

    async def _reconnected(self) -> None:
        """Same appSessionId, so the pairing is still there (or the gateway lost it)."""
        sio = self.sio
        try:
            status = await sio.call("app:status", timeout=self.args.wait)
        except (TimeoutError, socketio.exceptions.SocketIOError):
            return  # lost again: the next connect tries again
        if not status.get("paired"):
            self.notice("the pairing is gone (the gateway lost its store?)")
            self.finish(1)
            return
        self.notice("reconnected")
        self._window_changed()
        self.up.set()

    def _typed(self) -> None:
        try:
            data = os.read(self.stdin, 65536)
        except OSError:
            data = b""
        if not data:
            self.finish(1)  # the local terminal went away
            return
        out = bytearray()
        for byte in data:
            ch = bytes([byte])
            if self.tilde:
                self.tilde = False
                if ch == b".":
                    self.notice("left with ~. (the shell on the runner goes on)")
                    self.finish(255)
                    return
                if ch != b"~":
                    out += b"~"
                out += ch
            elif ch == b"~" and self.at_line_start:
                self.tilde = True
                continue
            else:
                out += ch
            self.at_line_start = ch in (b"\r", b"\n")
        if out:
            self._send(bytes(out))

    def _send(self, data: bytes) -> None:
        self.outbox.put_nowait(("app:command", {"data": data}))

    async def _pump(self) -> None:
        """Emit in typing order without waiting for acks (a refusal is shown when it comes);
        while disconnected, keystrokes wait here."""
        while True:
            event, payload = await self.outbox.get()
            while True:
                await self.up.wait()
                try:
                    await self.sio.emit(event, payload, callback=self._acked(event))
                    break
                except socketio.exceptions.SocketIOError:
                    self.up.clear()

    def _acked(self, event: str) -> Any:
        def check(*ack: Any) -> None:
            if ack and isinstance(ack[0], dict) and not ack[0].get("success"):
                self.notice(f"{event} refused: {ack[0].get('error')} ({ack[0].get('message')})")

        return check

    def _window_changed(self) -> None:
        try:
            size = os.get_terminal_size(self.stdin)
        except OSError:
            return
        if size.columns > 0 and size.lines > 0:
            self.outbox.put_nowait(("app:resize", {"cols": size.columns, "rows": size.lines}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    parser.add_argument("--code", help="the runner's pairing code (omit to resume a pairing)")
    parser.add_argument(
        "--app-session-id", help="16-128 chars of A-Z a-z 0-9 _ - (default: a random one)"
    )
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for answers")
    parser.add_argument(
        "commands", nargs="*", help="commands to send to the runner (none: a terminal)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
