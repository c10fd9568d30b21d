"""A shell in a pseudo-terminal, for a runner that gives each app a terminal.

What the shell prints is read in chunks of up to 64 KiB and coalesced for a few milliseconds,
so a burst becomes a few large messages; the pty is no longer read while too much output waits
for the gateway (the shell then blocks on its writes, as on a slow terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable

#: Largest read from a pseudo-terminal, and most bytes in one message.
READ_CHUNK = 65536
MAX_MESSAGE = 256 * 1024
#: How long output is gathered before it is sent.
COALESCE_S = 0.003
#: Output waiting to be sent past which the pty is no longer read.
MAX_PENDING = 4 * 1024 * 1024

Emit = Callable[[bytes], Awaitable[None]]
Exited = Callable[[int], Awaitable[None]]


class Shell:
    """One shell in a pseudo-terminal; ``emit`` sends what it prints, ``exited`` its status."""

    def __init__(self, argv: list[str], term: str, emit: Emit, exited: Exited) -> None:
        self.emit = emit
        self.exited = exited
        self.pending = bytearray()
        self.more = asyncio.Event()
        self.reading = False
        self.ended = False
        env = dict(os.environ, TERM=term)
        pid, fd = os.forkpty()
        if pid == 0:  # the child: only exec (or exit) here
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self._resume_reading()
        self.sender = asyncio.create_task(self._send())

    def _resume_reading(self) -> None:
        if not self.reading and not self.ended:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def _pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every process on the terminal's other side is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._pause_reading()
            self.ended = True
        else:
            self.pending += data
            if len(self.pending) >= MAX_PENDING:
                self._pause_reading()
        self.more.set()

    def write(self, data: bytes) -> None:
        """Keystrokes into the terminal (small: a short blocking write if the buffer is full)."""
        view = memoryview(data)
        while view and not self.ended:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                os.set_blocking(self.fd, True)
                try:
                    view = view[os.write(self.fd, view) :]
                finally:
                    os.set_blocking(self.fd, False)
            except OSError:
                return

    def resize(self, cols: int, rows: int) -> None:
        """TIOCSWINSZ; the kernel tells the foreground programs (SIGWINCH)."""
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def _send(self) -> None:
        while True:
            await self.more.wait()
            if not self.ended:
                await asyncio.sleep(COALESCE_S)  # let a burst gather
            self.more.clear()
            while self.pending:
                chunk = bytes(self.pending[:MAX_MESSAGE])
                del self.pending[:MAX_MESSAGE]
                self._resume_reading()  # below the limit again
                await self.emit(chunk)
            if self.ended:
                break
        status = await asyncio.to_thread(self._wait)
        os.close(self.fd)
        await self.exited(status)

    def _wait(self) -> int:
        _, raw = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(raw):
            return 128 + os.WTERMSIG(raw)
        return os.waitstatus_to_exitcode(raw)

    def hang_up(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.pid), signal.SIGHUP)
