"""The load generator: one process driving many lean connections through one scenario.

``python -m bench.loadgen SCENARIO --url URL ...`` connects and sets up its share of the
clients, prints ``READY {json}``, waits for ``GO {"measure_at": t0, "end_at": t1}`` on stdin
(times on the system-wide monotonic clock, shared by every process on the machine), runs the
closed loops from then until ``end_at``, counting only operations that complete inside
``[t0, t1]`` (the time before t0 is warm-up), closes its connections and prints
``RESULT {json}`` with counts and latencies in milliseconds. Several generator processes can
split one scenario (``--offset``/``--count``); the orchestrator merges their results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.client import LeanClient, new_session
from bench.procs import raise_nofile_limit

now = time.monotonic


@dataclass
class Window:
    measure_at: float
    end_at: float


@dataclass
class Series:
    """Latencies (ms) of operations that completed inside the measurement window."""

    latencies_ms: list[float] = field(default_factory=list)

    def record(self, window: Window, started: float, finished: float) -> None:
        if window.measure_at <= finished <= window.end_at:
            self.latencies_ms.append(round((finished - started) * 1000, 3))


class Scenario:
    """Set up clients, then run closed loops until the window ends."""

    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.session = session
        self.clients: list[LeanClient] = []
        self.series: dict[str, Series] = {}
        self.errors = 0
        self.error_codes: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.unfinished = 0
        self.setup_retries = 0
        self.window: Window | None = None
        self.extra: dict[str, Any] = {}

    # helpers ------------------------------------------------------------------------------

    def series_for(self, name: str) -> Series:
        return self.series.setdefault(name, Series())

    def error(self, what: Any) -> None:
        """Count a failed operation (inside the measurement window, like the successes)."""
        window = self.window
        if window is not None and not window.measure_at <= now() <= window.end_at:
            return
        self.errors += 1
        code = str(what.get("error")) if isinstance(what, dict) else type(what).__name__
        self.error_codes[code] = self.error_codes.get(code, 0) + 1
        if len(self.error_samples) < 5:
            self.error_samples.append(repr(what)[:300])

    async def connect(self, url: str, auth: dict[str, Any] | None = None) -> LeanClient:
        client = LeanClient()
        self.clients.append(client)
        return await client.connect(self.session, url, auth=auth)

    async def bounded(
        self, count: int, make: Callable[[int], Awaitable[None]], concurrency: int = 50
    ) -> None:
        """Run ``make(i)`` for every i in this process's share, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await make(i)

        await asyncio.gather(*(one(self.args.offset + k) for k in range(count)))

    async def register(self, client: LeanClient, runner_id: str) -> dict[str, Any]:
        """runner:register, retried on UNAVAILABLE (set-up is not measured)."""
        for attempt in range(20):
            ack = await client.call("runner:register", {"runnerId": runner_id})
            if isinstance(ack, dict) and ack.get("success") is True:
                return ack
            if not isinstance(ack, dict) or ack.get("error") != "UNAVAILABLE":
                break
            self.setup_retries += 1
            await asyncio.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"runner:register {runner_id} failed: {ack!r}")

    # the scenario -------------------------------------------------------------------------

    async def setup(self) -> None:
        raise NotImplementedError

    def workers(self, window: Window) -> list[Awaitable[None]]:
        raise NotImplementedError

    async def run(self, window: Window) -> None:
        self.window = window
        tasks = [asyncio.ensure_future(w) for w in self.workers(window)]
        if not tasks:
            return
        grace = max(0.0, window.end_at - now()) + 5.0
        done, pending = await asyncio.wait(tasks, timeout=grace)
        self.unfinished = len(pending)
        for task in pending:
            task.cancel()
        self.window = None  # from here on every failure counts
        for task in done:
            if task.exception() is not None:
                self.error(task.exception())
        if pending:
            await asyncio.wait(pending, timeout=2)

    async def close(self) -> None:
        gate = asyncio.Semaphore(200)

        async def one(client: LeanClient) -> None:
            async with gate:
                await client.close()

        await asyncio.gather(*(one(c) for c in self.clients), return_exceptions=True)

    def result(self, window: Window) -> dict[str, Any]:
        span = window.end_at - window.measure_at
        return {
            "scenario": self.args.scenario,
            "window_s": span,
            "series": {
                name: {"ops": len(s.latencies_ms), "latencies_ms": s.latencies_ms}
                for name, s in self.series.items()
            },
            "errors": self.errors,
            "error_codes": self.error_codes,
            "setup_retries": self.setup_retries,
            "error_samples": self.error_samples,
            "unfinished": self.unfinished,
            "clients": len(self.clients),
            **self.extra,
        }


class Heartbeat(Scenario):
    """N registered runners, each sending runner:heartbeat with ack in a closed loop."""

    async def setup(self) -> None:
        self.runners: list[tuple[LeanClient, str]] = []

        async def make(i: int) -> None:
            runner_id = f"{self.args.prefix}-hb-{i}"
            client = await self.connect(self.args.url)
            await self.register(client, runner_id)
            self.runners.append((client, runner_id))

        await self.bounded(self.args.count, make)

    def workers(self, window: Window) -> list[Awaitable[None]]:
        return [self._loop(c, r, window) for c, r in self.runners]

    async def _loop(self, client: LeanClient, runner_id: str, window: Window) -> None:
        series = self.series_for("ack")
        payload = {"runnerId": runner_id}
        end = window.end_at
        while (started := now()) < end:
            ack = await client.call("runner:heartbeat", payload)
            if type(ack) is dict and ack.get("success") is True:
                series.record(window, started, now())
            else:
                self.error(ack)
                await asyncio.sleep(0.01)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


@dataclass
class RelayPair:
    index: int
    app: LeanClient
    runner: LeanClient
    expected: str = ""
    waiter: asyncio.Future[None] | None = None


class Relay(Scenario):
    """App sends app:command; its runner answers terminal:input with runner:output."""

    async def setup(self) -> None:
        self.pairs: list[RelayPair] = []
        self.mismatches = 0
        runner_url = self.args.url2 or self.args.url

        async def make(i: int) -> None:
            runner = await self.connect(runner_url)
            reg = await self.register(runner, f"{self.args.prefix}-rl-{i}")
            app = await self.connect(
                self.args.url, auth={"appSessionId": f"{self.args.prefix}-app-{i:012d}"}
            )
            pair = RelayPair(i, app, runner)
            runner.on("terminal:input", self._answer(runner))
            app.on("terminal:output", self._received(pair))
            ack = await app.call("app:pair", {"pairingCode": reg["pairingCode"]})
            if not isinstance(ack, dict) or ack.get("success") is not True:
                raise RuntimeError(f"app:pair failed: {ack!r}")
            self.pairs.append(pair)

        await self.bounded(self.args.count, make, concurrency=50)
        await asyncio.sleep(0.2)  # let pairing:paired notifications settle

    def _answer(self, runner: LeanClient) -> Callable[[Any], Awaitable[None]]:
        def check(ack: Any) -> None:
            if type(ack) is not dict or ack.get("success") is not True:
                self.error(ack)

        async def on_input(msg: Any) -> None:
            # The contract sends every client event with an ack; the runner does not wait.
            await runner.emit_with_ack("runner:output", {"data": msg["data"]}, check)

        return on_input

    def _received(self, pair: RelayPair) -> Callable[[Any], Awaitable[None]]:
        async def on_output(msg: Any) -> None:
            waiter = pair.waiter
            if waiter is None or waiter.done():
                return
            if msg.get("data") == pair.expected:
                waiter.set_result(None)
            else:
                self.mismatches += 1

        return on_output

    def workers(self, window: Window) -> list[Awaitable[None]]:
        return [self._loop(p, window) for p in self.pairs]

    async def _loop(self, pair: RelayPair, window: Window) -> None:
        series = self.series_for("round_trip")
        loop = asyncio.get_running_loop()
        seq = 0
        end = window.end_at
        while (started := now()) < end:
            seq += 1
            pair.expected = f"{pair.index}:{seq}"
            pair.waiter = waiter = loop.create_future()
            # An output that never comes (its runner:output failed) must not stall the pair.
            expiry = loop.call_later(self.args.lost_after, _expire, waiter)
            ack = await pair.app.call("app:command", {"data": pair.expected})
            if type(ack) is not dict or ack.get("success") is not True:
                expiry.cancel()
                self.error(ack)
                await asyncio.sleep(0.01)
                continue
            try:
                await waiter
            except TimeoutError:
                self.error({"error": "LOST_OUTPUT"})
                continue
            finally:
                expiry.cancel()
            series.record(window, started, now())

    def result(self, window: Window) -> dict[str, Any]:
        self.extra["mismatches"] = self.mismatches
        return super().result(window)


class Pair(Scenario):
    """Workers looping runner:register -> app:pair -> app:unpair."""

    async def setup(self) -> None:
        self.workers_: list[tuple[LeanClient, LeanClient, str]] = []

        async def make(i: int) -> None:
            runner = await self.connect(self.args.url)
            app = await self.connect(
                self.args.url, auth={"appSessionId": f"{self.args.prefix}-pa-{i:012d}"}
            )
            self.workers_.append((runner, app, f"{self.args.prefix}-pr-{i}"))

        await self.bounded(self.args.count, make, concurrency=50)

    def workers(self, window: Window) -> list[Awaitable[None]]:
        return [self._loop(r, a, rid, window) for r, a, rid in self.workers_]

    async def _loop(
        self, runner: LeanClient, app: LeanClient, runner_id: str, window: Window
    ) -> None:
        loops = self.series_for("pairing")
        pairs = self.series_for("app:pair")
        registers = self.series_for("runner:register")
        end = window.end_at
        while (started := now()) < end:
            reg = await runner.call("runner:register", {"runnerId": runner_id})
            registered = now()
            if type(reg) is not dict or reg.get("success") is not True:
                self.error(reg)
                await asyncio.sleep(0.01)
                continue
            ack = await app.call("app:pair", {"pairingCode": reg["pairingCode"]})
            paired = now()
            if type(ack) is not dict or ack.get("success") is not True:
                self.error(ack)
                await asyncio.sleep(0.01)
                continue
            unpaired = await app.call("app:unpair", {})
            if type(unpaired) is not dict or unpaired.get("success") is not True:
                self.error(unpaired)
                continue
            finished = now()
            registers.record(window, started, registered)
            pairs.record(window, registered, paired)
            loops.record(window, started, finished)


class Idle(Scenario):
    """K registered runners heartbeating every ``--interval`` seconds (production: 10 s)."""

    async def setup(self) -> None:
        self.runners: list[tuple[LeanClient, str]] = []
        started = now()

        async def make(i: int) -> None:
            runner_id = f"{self.args.prefix}-idle-{i}"
            client = await self.connect(self.args.url)
            await self.register(client, runner_id)
            self.runners.append((client, runner_id))

        await self.bounded(self.args.count, make, concurrency=self.args.connect_concurrency)
        self.extra["setup_connect_per_s"] = round(len(self.runners) / (now() - started), 1)

    def workers(self, window: Window) -> list[Awaitable[None]]:
        rng = random.Random(self.args.offset)
        return [
            self._loop(c, r, window, rng.uniform(0, self.args.interval)) for c, r in self.runners
        ]

    async def _loop(self, client: LeanClient, runner_id: str, window: Window, phase: float) -> None:
        series = self.series_for("heartbeat")
        payload = {"runnerId": runner_id}
        due = now() + phase
        while due < window.end_at:
            await asyncio.sleep(max(0.0, due - now()))
            started = now()
            ack = await client.call("runner:heartbeat", payload)
            if type(ack) is dict and ack.get("success") is True:
                series.record(window, started, now())
            else:
                self.error(ack)
            due += self.args.interval

    def result(self, window: Window) -> dict[str, Any]:
        self.extra["pings_answered"] = sum(c.pings for c in self.clients)
        self.extra["connected_at_end"] = sum(1 for c in self.clients if c.connected)
        return super().result(window)


class Warm(Scenario):
    """Connect, register and heartbeat a few runners, then leave (loads the code paths)."""

    async def setup(self) -> None:
        async def make(i: int) -> None:
            runner_id = f"{self.args.prefix}-warm-{i}"
            client = await self.connect(self.args.url)
            await self.register(client, runner_id)
            for _ in range(3):
                await client.call("runner:heartbeat", {"runnerId": runner_id})

        await self.bounded(self.args.count, make)

    def workers(self, window: Window) -> list[Awaitable[None]]:
        return []


SCENARIOS: dict[str, type[Scenario]] = {
    "heartbeat": Heartbeat,
    "relay": Relay,
    "pair": Pair,
    "idle": Idle,
    "warm": Warm,
}


def emit_line(tag: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload, separators=(',', ':'))}\n")
    sys.stdout.flush()


async def amain(args: argparse.Namespace) -> None:
    async with new_session() as session:
        scenario = SCENARIOS[args.scenario](args, session)
        try:
            started = now()
            await scenario.setup()
            emit_line("READY", {"setup_s": round(now() - started, 3)})
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line.startswith("GO "):
                raise RuntimeError(f"expected GO, got {line!r}")
            go = json.loads(line[3:])
            window = Window(float(go["measure_at"]), float(go["end_at"]))
            await scenario.run(window)
            result = scenario.result(window)
        finally:
            await scenario.close()
    emit_line("RESULT", result)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="lean Socket.IO load generator")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True, help="server base URL (apps, and runners)")
    parser.add_argument("--url2", help="runners connect here instead (relay on two replicas)")
    parser.add_argument("--count", type=int, required=True, help="clients/pairs/workers here")
    parser.add_argument("--offset", type=int, default=0, help="index of this share's first")
    parser.add_argument("--prefix", default="bench", help="prefix of runner and app ids")
    parser.add_argument("--interval", type=float, default=10.0, help="idle heartbeat period")
    parser.add_argument(
        "--lost-after", type=float, default=2.0, help="relay: output counted lost after, s"
    )
    parser.add_argument("--connect-concurrency", type=int, default=50)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        asyncio.run(amain(args))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
