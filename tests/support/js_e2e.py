"""Running the end-to-end encrypted JavaScript module (clients/js) from the Python tests.

``clients/js`` pins its dependencies in package-lock.json; ``e2e_node`` installs them with
``npm ci`` when ``clients/js/node_modules`` is missing (once per session) and fails, naming
what to install, when node or npm is not there. ``run_e2e_scenario`` runs
``tests/clients/js/e2e_scenario.mjs`` (JSON lines, one per step) and returns them by step;
``Lines`` follows a long-running client's output; ``RecordedMonitor`` keeps every command
a redis-server receives (redis-cli MONITOR) to check what never reached it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.js import need, npm_installed
from tests.support.paths import ROOT

PACKAGE = ROOT / "clients" / "js"
SCENARIO = ROOT / "tests" / "clients" / "js" / "e2e_scenario.mjs"


@pytest.fixture(scope="session")
def e2e_node() -> Iterator[str]:
    """The node binary, with clients/js/node_modules installed from its lockfile."""
    yield npm_installed(PACKAGE, "@noble/curves/package.json")


def node_env() -> dict[str, str]:
    return {**os.environ, "NODE_NO_WARNINGS": "1"}


async def run_e2e_scenario(
    node: str, config: dict[str, Any], timeout: float = 120
) -> dict[str, dict[str, Any]]:
    """Runs one scenario to its end; fails with its output unless it printed ``done``."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCENARIO),
        json.dumps(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node_env(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"e2e_scenario.mjs did not finish within {timeout} s") from None
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    steps = {rec.pop("step"): rec for rec in lines}
    detail = "\n".join(json.dumps(r)[:600] for r in lines) + "\n" + stderr.decode()[-3000:]
    assert "error" not in steps, f"scenario failed at {steps['error'].get('at')}:\n{detail}"
    assert "done" in steps, f"exit {proc.returncode}:\n{detail}"
    return steps


class Lines:
    """A child process whose stdout lines are read as they come; stopped by its pid."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen = b""

    async def until(self, pattern: re.Pattern[bytes], timeout: float = 60) -> re.Match[bytes]:
        """The first match of ``pattern`` in a line read from now on."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern.pattern!r} in:\n{self.seen.decode()[-3000:]}"
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            assert line, (
                f"exited ({self.proc.returncode}) without {pattern.pattern!r}:\n"
                + (self.seen.decode()[-3000:])
            )
            self.seen += line
            found = pattern.search(line)
            if found:
                return found

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class RecordedMonitor:
    """``redis-cli MONITOR`` on one server into a file, from start() until stop() (by pid)."""

    def __init__(self, port: int, path: Path) -> None:
        self.port = port
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.path.open("wb") as fh:
            self.proc = subprocess.Popen(
                [need("redis-cli"), "-p", str(self.port), "monitor"], stdout=fh, stderr=fh
            )
        deadline = time.monotonic() + 10
        while b"OK" not in self.path.read_bytes():
            assert self.proc.poll() is None, self.path.read_bytes()
            assert time.monotonic() < deadline, "redis-cli MONITOR did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def recorded(self) -> bytes:
        """Every command so far, as MONITOR prints it (binary arguments as \\x escapes)."""
        return self.path.read_bytes()
