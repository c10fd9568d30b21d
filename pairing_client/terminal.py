"""The local tty as a terminal on the runner's shell, for an App.

Raw mode while the session runs, each keystroke sent as typed, the window size at start and on
every change, output written as it comes. ``~.`` at the start of a line leaves (``~~`` sends
one ``~``), as with ssh. The local terminal is restored on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from typing import Any

from .app import App

LEFT = 255


class LocalTerminal:
    def __init__(self, app: App, wait_s: float = 10.0) -> None:
        self.app = app
        self.wait_s = wait_s
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self.raw = False
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.at_line_start = True
        self.tilde = False
        app.on_data = self._write
        app.on_exit = self.finish
        app.notice = self.notice
        app.on_reconnected = self._window_changed

    def notice(self, text: str) -> None:
        """A line of our own on the terminal (raw mode: CR LF)."""
        if self.raw:
            os.write(self.stdout, f"\r\n[app: {text}]\r\n".encode())
        else:
            print(text, flush=True)

    def finish(self, status: int) -> None:
        if not self.done.done():
            self.done.set_result(status)

    def _write(self, data: Any) -> None:
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, bytes):
            view = memoryview(data)
            while view:
                view = view[os.write(self.stdout, view) :]

    async def run(self) -> int:
        if not os.isatty(self.stdin):
            print("without commands the app is a terminal: run it in one (stdin is not a tty)")
            return 1
        loop = asyncio.get_running_loop()
        session = asyncio.create_task(self.app.run())
        ready = asyncio.create_task(self.app.ready.wait())
        saved = termios.tcgetattr(self.stdin)
        try:
            await asyncio.wait([session, ready], return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                status, message = await session
                print(message, flush=True)
                return status
            mode = "end-to-end encrypted" if self.app.e2e else "not encrypted"
            print(
                f"paired with runner {self.app.runner_id} as app {self.app.app_id} ({mode})",
                flush=True,
            )
            print("escape sequence: ~. at the start of a line", flush=True)
            tty.setraw(self.stdin, termios.TCSANOW)  # keys typed ahead are kept, and sent
            self.raw = True
            loop.add_reader(self.stdin, self._typed)
            loop.add_signal_handler(signal.SIGWINCH, self._window_changed)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled, sig)
            self._window_changed()
            either: set[asyncio.Future[Any]] = {session, self.done}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if self.done.done():
                return self.done.result()
            status, message = session.result()
            self.notice(message)
            return status
        finally:
            ready.cancel()
            with contextlib.suppress(Exception):
                loop.remove_reader(self.stdin)
            for sig in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                loop.remove_signal_handler(sig)
            termios.tcsetattr(self.stdin, termios.TCSAFLUSH, saved)
            self.raw = False
            session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session

    def _signalled(self, sig: signal.Signals) -> None:
        self.notice(f"ended by {sig.name}")
        self.finish(128 + sig)

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
                    self.finish(LEFT)
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
            self.app.send(bytes(out))

    def _window_changed(self) -> None:
        try:
            size = os.get_terminal_size(self.stdin)
        except OSError:
            return
        if size.columns > 0 and size.lines > 0:
            self.app.resize(size.columns, size.lines)
