"""PairingSessionService in closed loops beside redis-benchmark running the same commands.

``python -m bench.service --redis-url URL`` (the orchestrator pins it to the gateway's CPU,
with Redis on the other one; redis-benchmark inherits the pinning). For each method:

1. the commands it sends are captured with MONITOR (commands run inside Lua, ``[0 lua]``,
   are not round trips and are left out), so the comparison follows the service as it is;
2. ``--tasks`` asyncio tasks call the method in a closed loop for ``--seconds`` through the
   gateway's own client settings (``pairing.store.connect``, hiredis, uvloop): ops/s;
3. ``redis-benchmark -c TASKS`` sends the captured commands with the same keys (the ids of
   the 50 tasks, as ``__rand_int__`` with ``-r TASKS``): ops/s, the limit for this client
   count. A method that sends k commands is limited to 1 / (sum of 1/rps of each).

State: every task i has app ``bench-app-{i:012d}`` paired with runner ``bench-runner-{i:012d}``,
which has a heartbeat. Methods run in the order below, so the removals run last, and after
their first call find nothing to remove: both sides measure that same steady state.
Prints ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from pairing import PairingSessionService
from pairing.store import Redis, connect

APP = "bench-app-{:012d}"
RUNNER = "bench-runner-{:012d}"

Call = Callable[[PairingSessionService, int], Awaitable[Any]]

#: (method, call) in the order they run: reads, then writes, then removals.
METHODS: list[tuple[str, Call]] = [
    ("get_session", lambda s, i: s.get_session(APP.format(i))),
    ("get_apps_by_runner_id", lambda s, i: s.get_apps_by_runner_id(RUNNER.format(i))),
    ("is_runner_online", lambda s, i: s.is_runner_online(RUNNER.format(i))),
    ("get_session_status", lambda s, i: s.get_session_status(APP.format(i))),
    ("update_heartbeat", lambda s, i: s.update_heartbeat(RUNNER.format(i))),
    ("create_session", lambda s, i: s.create_session(APP.format(i), RUNNER.format(i))),
    ("remove_session", lambda s, i: s.remove_session(APP.format(i))),
    (
        "remove_all_sessions_for_runner",
        lambda s, i: s.remove_all_sessions_for_runner(RUNNER.format(i)),
    ),
]

_LINE = re.compile(r"^\+?(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and i + 3 < len(text):
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Monitor:
    """A raw MONITOR connection: the commands clients send between two ECHO markers."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"MONITOR\r\n")
        await self._writer.drain()
        first = await asyncio.wait_for(self._reader.readline(), 5)
        if first != b"+OK\r\n":
            raise RuntimeError(f"MONITOR answered {first!r}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def capture(self, client: Redis, call: Callable[[], Awaitable[Any]]) -> list[list[str]]:
        assert self._reader is not None
        marker = uuid.uuid4().hex
        begin, end = f"bench-begin-{marker}", f"bench-end-{marker}"
        await client.echo(begin)
        await call()
        await client.echo(end)
        seen: list[list[str]] = []
        started = False
        while True:
            raw = await asyncio.wait_for(self._reader.readline(), 5)
            m = _LINE.match(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if m is None:
                continue
            args = [_unescape(a) for a in _ARG.findall(m.group(4))]
            if args[:1] == ["ECHO"] and args[1:] == [begin]:
                started = True
            elif args[:1] == ["ECHO"] and args[1:] == [end]:
                return seen
            elif started and m.group(3) != "lua":
                seen.append(args)


def redis_benchmark(port: int, tasks: int, requests: int, command: list[str]) -> float:
    """requests/s of ``command`` from redis-benchmark at ``tasks`` clients."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found (it ships with redis-server / redis-tools)")
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(tasks), "-n", str(requests)]
    argv += ["-r", str(tasks), "--csv", *command]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if not rows:
        raise RuntimeError(f"redis-benchmark printed no result: {out!r}")
    return float(rows[-1]["rps"])


def templated(command: list[str]) -> list[str]:
    """Task 0's ids -> ``__rand_int__`` (redis-benchmark draws 0..r-1, 12 digits)."""
    app0, runner0 = APP.format(0), RUNNER.format(0)
    app_t = APP.replace("{:012d}", "__rand_int__")
    runner_t = RUNNER.replace("{:012d}", "__rand_int__")
    return [a.replace(app0, app_t).replace(runner0, runner_t) for a in command]


async def closed_loop(svc: PairingSessionService, call: Call, tasks: int, seconds: float) -> float:
    end = time.monotonic() + seconds
    counts = [0] * tasks

    async def worker(i: int) -> None:
        n = 0
        while time.monotonic() < end:
            await call(svc, i)
            n += 1
        counts[i] = n

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return sum(counts) / (time.monotonic() - started)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    client = connect(args.redis_url)
    svc = PairingSessionService(client)
    port = urlparse(args.redis_url).port or 6379
    results: list[dict[str, Any]] = []
    try:
        await svc.load_scripts()
        for i in range(args.tasks):
            await svc.create_session(APP.format(i), RUNNER.format(i))
            await svc.update_heartbeat(RUNNER.format(i))
        await asyncio.gather(*(svc.get_session(APP.format(i)) for i in range(args.tasks)))
        for name, call in METHODS:
            # MONITOR slows Redis down for everyone: open it for the capture only.
            monitor = Monitor(args.redis_url)
            await monitor.open()
            try:
                commands = await monitor.capture(client, lambda call=call: call(svc, 0))  # type: ignore[misc]
            finally:
                await monitor.close()
            python_ops = await closed_loop(svc, call, args.tasks, args.seconds)
            # Sized to run about as long as the Python side (redis-benchmark is faster).
            requests = max(args.min_requests, int(python_ops * args.seconds * 2))
            limits = [
                redis_benchmark(port, args.tasks, requests, templated(cmd)) for cmd in commands
            ]
            limit = 1 / sum(1 / r for r in limits) if limits else float("nan")
            results.append(
                {
                    "method": name,
                    "python_ops_s": round(python_ops, 1),
                    "redis_benchmark_ops_s": round(limit, 1),
                    "ratio": round(python_ops / limit, 4) if limits else None,
                    "commands": [c[0].upper() for c in commands if c],
                }
            )
    finally:
        await client.aclose()
    return {"tasks": args.tasks, "seconds": args.seconds, "methods": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=1.0, help="per method, Python side")
    parser.add_argument(
        "--min-requests", type=int, default=5_000, help="least requests per redis-benchmark run"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    result = asyncio.run(amain(args))
    sys.stdout.write("RESULT " + json.dumps(result, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
