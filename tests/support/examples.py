"""Run examples/runner.py and examples/app.py as subprocesses and read what they print."""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import weakref

from tests.support.paths import ROOT

RUNNER = ROOT / "examples" / "runner.py"
APP = ROOT / "examples" / "app.py"
CODE_LINE = re.compile(r"^pairing code: (\S+)")


class RunnerProcess:
    """examples/runner.py in its own process; every printed line is kept in ``lines``."""

    def __init__(self, url: str, runner_id: str, *extra: str) -> None:
        self.args = [
            sys.executable,
            "-u",
            str(RUNNER),
            "--url",
            url,
            "--runner-id",
            runner_id,
            "--min-backoff",
            "0.2",
            "--max-backoff",
            "0.5",
            "--ack-timeout",
            "3",
            *extra,
        ]
        self.proc: asyncio.subprocess.Process | None = None
        #: Where the runner keeps its key (XDG_STATE_HOME), never the user's own.
        #: Kept across stop() and start() (a restarted runner reuses its key), removed with
        #: the object.
        self.state_dir = tempfile.mkdtemp(prefix="runner-state-")
        weakref.finalize(self, shutil.rmtree, self.state_dir, True)
        self.lines: list[str] = []
        self._new_lines = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "XDG_STATE_HOME": self.state_dir},
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._new_lines:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._new_lines.notify_all()

    async def next_code(self, after: int = 0, timeout: float = 15) -> tuple[str, int]:
        """The first pairing code printed at line index >= ``after``, and its line index."""

        def found() -> tuple[str, int] | None:
            for i in range(after, len(self.lines)):
                m = CODE_LINE.match(self.lines[i])
                if m:
                    return m.group(1), i
            return None

        try:
            async with asyncio.timeout(timeout), self._new_lines:
                await self._new_lines.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise AssertionError(
                "the runner printed no pairing code:\n" + "\n".join(self.lines)
            ) from None
        result = found()
        assert result is not None
        return result

    async def wait_line(self, pattern: str, after: int = 0, timeout: float = 15) -> int:
        """The index of the first printed line at >= ``after`` that matches ``pattern``."""
        regex = re.compile(pattern)

        def found() -> int | None:
            return next(
                (i for i in range(after, len(self.lines)) if regex.search(self.lines[i])), None
            )

        try:
            async with asyncio.timeout(timeout), self._new_lines:
                await self._new_lines.wait_for(lambda: found() is not None)
        except TimeoutError:
            lines = "\n".join(self.lines)
            raise AssertionError(f"the runner printed no {pattern!r}:\n{lines}") from None
        index = found()
        assert index is not None
        return index

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self) -> int | None:
        """SIGCONT (in case it is frozen), then SIGTERM by pid; SIGKILL after 10 s."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return self.proc.returncode


#: Where the apps that run_app starts keep their pairing keys (never the user's own state):
#: one folder for the whole session, so that a later app of the same appSessionId re-keys.
APP_STATE = tempfile.mkdtemp(prefix="app-state-")
atexit.register(shutil.rmtree, APP_STATE, True)


async def run_app(url: str, *args: str, timeout: float = 30) -> tuple[int, str]:
    """examples/app.py to completion; returns its exit status and everything it printed."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        "--url",
        url,
        "--wait",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "XDG_STATE_HOME": APP_STATE},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        elapsed = time.monotonic() - started
        raise AssertionError(f"app.py still running after {elapsed:.0f} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
