"""A person at a terminal, played by tmux: a private tmux server, keys in, screen out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import time


class Tmux:
    """One detached tmux session on a server of its own (``-L``), killed at the end."""

    def __init__(self, cols: int = 100, rows: int = 30) -> None:
        binary = shutil.which("tmux")
        assert binary is not None, "tmux is not installed (make test installs it)"
        self.base = [binary, "-L", f"pg-test-{secrets.token_hex(6)}", "-f", "/dev/null"]
        self.cols, self.rows = cols, rows
        self.target = "t"
        self.socket_path = ""

    async def tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.base,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"tmux {args}: {text}"
        return text

    async def start(self, command: str) -> None:
        await self.tmux(
            "new-session", "-d", "-s", self.target, "-x", str(self.cols), "-y", str(self.rows),
            command,
        )  # fmt: skip
        await self.tmux("set-option", "-t", self.target, "status", "off")
        self.socket_path = (await self.tmux("display-message", "-p", "#{socket_path}")).strip()

    async def keys(self, *keys: str) -> None:
        """tmux key names (``Enter``, ``C-c``) or, with ``literal``, text."""
        await self.tmux("send-keys", "-t", self.target, *keys)

    async def type(self, text: str, enter: bool = True) -> None:
        await self.tmux("send-keys", "-t", self.target, "-l", text)
        if enter:
            await self.keys("Enter")

    async def screen(self, history: bool = False) -> str:
        """The visible screen; with ``history``, also the lines scrolled off above it."""
        since = ["-S", "-"] if history else []
        return await self.tmux("capture-pane", "-p", "-J", *since, "-t", self.target)

    async def pane_size(self) -> tuple[int, int]:
        out = await self.tmux(
            "display-message", "-p", "-t", self.target, "#{pane_height} #{pane_width}"
        )
        rows, cols = out.split()
        return int(rows), int(cols)

    async def resize(self, cols: int, rows: int) -> None:
        await self.tmux("resize-window", "-t", self.target, "-x", str(cols), "-y", str(rows))

    async def wait_for(
        self, pattern: str, timeout: float = 15, history: bool = False
    ) -> re.Match[str]:
        """Poll the screen until a line matches ``pattern`` (a regex, per line)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            screen = await self.screen(history)
            match = regex.search(screen)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the screen:\n{screen}")
            await asyncio.sleep(0.05)

    async def wait_gone(self, pattern: str, timeout: float = 15) -> None:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while regex.search(screen := await self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} still on the screen:\n{screen}")
            await asyncio.sleep(0.05)

    async def clear(self) -> None:
        """Clear the screen and tmux's history, so that later waits see only new lines."""
        await self.keys("C-l")
        await self.tmux("clear-history", "-t", self.target)

    async def kill(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.base, "kill-server",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()
        if self.socket_path:  # the server leaves its socket file behind
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
