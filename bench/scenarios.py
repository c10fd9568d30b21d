"""The scenarios: which servers each one starts, how it drives them, what it measures.

Placement: servers under test on ``gateway_cpu`` (0), Redis and the load
generator on ``load_cpu`` (1). Two replicas are two processes, both on ``gateway_cpu``.
The service scenario runs its Python client and redis-benchmark on ``gateway_cpu`` (no
server runs then), so each side has one core and Redis the other.

Every scenario run starts its own server process(es) on an emptied Redis and stops them
by pid at the end; ``Bench.drive`` runs the generator processes through set-up, warm-up and
the measurement window, and reads CPU time of every watched process over that window.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import (
    RESULTS,
    LineChannel,
    Managed,
    Procs,
    RedisServer,
    Server,
    cpu_seconds,
    rss_kib,
    start_bare,
    start_gateway,
)
from bench.stats import percentile


@dataclass
class BenchConfig:
    runs: int = 3
    duration_s: float = 10.0
    warmup_s: float = 2.0
    heartbeat_runners: int = 200
    relay_pairs: int = 100
    pair_workers: int = 50
    idle_runners: int = 5000
    idle_interval_s: float = 10.0
    idle_settle_s: float = 3.0
    idle_window_s: float = 10.0
    service_tasks: int = 50
    service_seconds: float = 1.0
    fanout_duration_s: float = 5.0
    generator_procs: int = 1
    gateway_cpu: int = 0
    load_cpu: int = 1
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> BenchConfig:
        """About a minute: one run, short windows, 1,000 idle runners."""
        return cls(
            runs=1,
            duration_s=2.0,
            warmup_s=0.5,
            idle_runners=1000,
            idle_settle_s=1.0,
            idle_window_s=3.0,
            service_seconds=0.3,
            fanout_duration_s=2.0,
            quick=True,
        )


@dataclass
class Measurement:
    """One scenario (or variant), one run."""

    scenario: str
    run: int
    metrics: dict[str, float]
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the window
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Merged:
    """The generator processes' results of one scenario run, merged."""

    window_s: float
    latencies: dict[str, list[float]]
    errors: int
    error_codes: dict[str, int]
    unfinished: int
    raw: list[dict[str, Any]]

    def rate(self, series: str) -> float:
        return len(self.latencies.get(series, [])) / self.window_s

    def p(self, series: str, q: float) -> float:
        return percentile(self.latencies.get(series, []), q)

    def info(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for r in self.raw:
            for key, value in r.items():
                if key in {"series", "error_samples", "scenario", "window_s"}:
                    continue
                if isinstance(value, int | float) and not isinstance(value, bool):
                    extra[key] = extra.get(key, 0) + value
        extra["error_codes"] = self.error_codes
        samples = [s for r in self.raw for s in r.get("error_samples", [])]
        if samples:
            extra["error_samples"] = samples[:3]
        return extra


def merge(results: list[dict[str, Any]]) -> Merged:
    latencies: dict[str, list[float]] = {}
    codes: dict[str, int] = {}
    for r in results:
        for name, series in r["series"].items():
            latencies.setdefault(name, []).extend(series["latencies_ms"])
        for code, n in r.get("error_codes", {}).items():
            codes[code] = codes.get(code, 0) + n
    for values in latencies.values():
        values.sort()
    return Merged(
        window_s=float(results[0]["window_s"]),
        latencies=latencies,
        errors=sum(int(r["errors"]) for r in results),
        error_codes=codes,
        unfinished=sum(int(r.get("unfinished", 0)) for r in results),
        raw=results,
    )


Hook = Callable[[], None]


class Bench:
    """Shared state of one benchmark session: config, processes, the Redis server."""

    def __init__(self, cfg: BenchConfig, procs: Procs, redis: RedisServer) -> None:
        self.cfg = cfg
        self.procs = procs
        self.redis = redis

    # -- servers ------------------------------------------------------------------------

    def gateway(self, name: str, overrides: dict[str, Any] | None = None) -> Server:
        return start_gateway(
            self.procs, name, self.redis.url, cpu=self.cfg.gateway_cpu, overrides=overrides
        )

    def bare(self, name: str, *, redis_manager: bool = False) -> Server:
        url = self.redis.url if redis_manager else None
        return start_bare(self.procs, name, cpu=self.cfg.gateway_cpu, redis_url=url)

    def stop(self, *servers: Server) -> None:
        for server in servers:
            self.procs.stop(server.managed)

    # -- the load generator -------------------------------------------------------------

    def shares(self, total: int) -> list[tuple[int, int]]:
        """(offset, count) for each generator process."""
        n = max(1, min(self.cfg.generator_procs, total))
        base, extra = divmod(total, n)
        out, offset = [], 0
        for k in range(n):
            count = base + (1 if k < extra else 0)
            out.append((offset, count))
            offset += count
        return out

    def drive(
        self,
        label: str,
        scenario: str,
        total: int,
        gen_args: list[str],
        *,
        warmup: float,
        duration: float,
        watch: dict[str, int],
        at_start: Hook | None = None,
        at_end: Hook | None = None,
    ) -> tuple[Merged, dict[str, float]]:
        """Run generator processes through set-up, warm-up and the window; merge results.

        Returns the merged results and the CPU use (% of one core) of every watched
        process and of the generators (``generator``) over the measurement window.
        """
        gens = []
        for k, (offset, count) in enumerate(self.shares(total)):
            argv = [sys.executable, "-m", "bench.loadgen", scenario, *gen_args]
            argv += ["--count", str(count), "--offset", str(offset)]
            gens.append(
                self.procs.spawn(f"{label}-gen{k}", argv, cpu=self.cfg.load_cpu, pipes=True)
            )
        channels = [LineChannel(g) for g in gens]
        try:
            setup_timeout = 60 + total / 25
            for ch in channels:
                ch.expect("READY", setup_timeout)
            start = time.monotonic()
            measure_at = start + warmup
            end_at = measure_at + duration
            go = json.dumps({"measure_at": measure_at, "end_at": end_at})
            for ch in channels:
                ch.send(f"GO {go}")
            pids = dict(watch)
            for k, g in enumerate(gens):
                pids[f"generator{k}"] = g.pid
            _sleep_until(measure_at)
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            if at_start is not None:
                at_start()
            _sleep_until(end_at)
            cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t1 = time.monotonic()
            if at_end is not None:
                at_end()
            results = [json.loads(ch.expect("RESULT", duration + 60)) for ch in channels]
        finally:
            for g in gens:
                self.procs.stop(g)
        span = max(t1 - t0, 1e-9)
        cpu = {name: 100 * (cpu1[name] - cpu0[name]) / span for name in pids}
        cpu["generator"] = sum(v for k, v in cpu.items() if k.startswith("generator"))
        return merge(results), cpu


def _sleep_until(deadline: float) -> None:
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


def server_log_summary(*servers: Server, limit: int = 3) -> dict[str, int]:
    """Warnings and errors the gateways logged (JSON lines), counted by message and error."""
    counts: dict[str, int] = {}
    for server in servers:
        path = server.managed.log_path
        if path is None or not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                key = line.strip()[:120]
            else:
                if not isinstance(entry, dict) or entry.get("level") not in {"warning", "error"}:
                    continue
                key = str(entry.get("msg", ""))[:80]
                if entry.get("error"):
                    key += f" ({str(entry['error'])[:80]})"
            if key:
                counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    return dict(ranked[:limit])


def with_server_logs(measurements: list[Measurement], *servers: Server) -> list[Measurement]:
    summary = server_log_summary(*servers)
    if summary:
        for m in measurements:
            m.info["server_log"] = summary
    return measurements


# -- scenarios ------------------------------------------------------------------------------


def _heartbeat_on(bench: Bench, server: Server, label: str, run: int, name: str) -> Measurement:
    cfg = bench.cfg
    merged, cpu = bench.drive(
        label,
        "heartbeat",
        cfg.heartbeat_runners,
        ["--url", server.url, "--prefix", f"r{run}"],
        warmup=cfg.warmup_s,
        duration=cfg.duration_s,
        watch={"server": server.pid, "redis": bench.redis.pid},
    )
    return Measurement(
        name,
        run,
        {
            "acks_per_s": merged.rate("ack"),
            "p50_ms": merged.p("ack", 50),
            "p99_ms": merged.p("ack", 99),
            "errors_per_s": merged.errors / merged.window_s,
        },
        cpu,
        merged.info(),
    )


def heartbeat(bench: Bench, run: int) -> list[Measurement]:
    gw = bench.gateway(f"gw-heartbeat-r{run}")
    try:
        out = [_heartbeat_on(bench, gw, f"heartbeat-r{run}", run, "heartbeat")]
    finally:
        bench.stop(gw)
    return with_server_logs(out, gw)


def ceiling(bench: Bench, run: int) -> list[Measurement]:
    bare = bench.bare(f"bare-ceiling-r{run}")
    try:
        return [_heartbeat_on(bench, bare, f"ceiling-r{run}", run, "ceiling")]
    finally:
        bench.stop(bare)


def _relay_on(
    bench: Bench, app_server: Server, runner_server: Server, label: str, run: int, name: str
) -> Measurement:
    cfg = bench.cfg
    watch = {"server": app_server.pid, "redis": bench.redis.pid}
    args = ["--url", app_server.url, "--prefix", f"r{run}"]
    if runner_server is not app_server:
        watch = {
            "server_a": app_server.pid,
            "server_b": runner_server.pid,
            "redis": bench.redis.pid,
        }
        args += ["--url2", runner_server.url]
    duration = cfg.duration_s if name.startswith("relay") else cfg.fanout_duration_s
    merged, cpu = bench.drive(
        label,
        "relay",
        cfg.relay_pairs,
        args,
        warmup=cfg.warmup_s,
        duration=duration,
        watch=watch,
    )
    if "server_a" in cpu:
        cpu["server"] = cpu["server_a"] + cpu["server_b"]
    return Measurement(
        name,
        run,
        {
            "round_trips_per_s": merged.rate("round_trip"),
            "p50_ms": merged.p("round_trip", 50),
            "p99_ms": merged.p("round_trip", 99),
            "errors_per_s": merged.errors / merged.window_s,
        },
        cpu,
        merged.info(),
    )


def relay(bench: Bench, run: int) -> list[Measurement]:
    gw = bench.gateway(f"gw-relay-r{run}")
    try:
        out = [_relay_on(bench, gw, gw, f"relay-r{run}", run, "relay")]
    finally:
        bench.stop(gw)
    return with_server_logs(out, gw)


def relay2(bench: Bench, run: int) -> list[Measurement]:
    a = bench.gateway(f"gw-relay2a-r{run}")
    b = bench.gateway(f"gw-relay2b-r{run}")
    try:
        out = [_relay_on(bench, a, b, f"relay2-r{run}", run, "relay2")]
    finally:
        bench.stop(a, b)
    return with_server_logs(out, a, b)


def pair(bench: Bench, run: int) -> list[Measurement]:
    cfg = bench.cfg
    gw = bench.gateway(f"gw-pair-r{run}")
    try:
        merged, cpu = bench.drive(
            f"pair-r{run}",
            "pair",
            cfg.pair_workers,
            ["--url", gw.url, "--prefix", f"r{run}"],
            warmup=cfg.warmup_s,
            duration=cfg.duration_s,
            watch={"server": gw.pid, "redis": bench.redis.pid},
        )
    finally:
        bench.stop(gw)
    measurement = [
        Measurement(
            "pair",
            run,
            {
                "pairings_per_s": merged.rate("pairing"),
                "app_pair_p50_ms": merged.p("app:pair", 50),
                "app_pair_p99_ms": merged.p("app:pair", 99),
                "loop_p99_ms": merged.p("pairing", 99),
                "errors_per_s": merged.errors / merged.window_s,
            },
            cpu,
            merged.info(),
        )
    ]
    return with_server_logs(measurement, gw)


def idle(bench: Bench, run: int) -> list[Measurement]:
    """RSS per connection: (RSS with K registered runners - RSS with none) / K.

    "None" is measured after a warm-up of 20 runners that registered, heartbeated and left,
    so code paths loaded on first use are not charged to the connections.
    """
    cfg = bench.cfg
    gw = bench.gateway(f"gw-idle-r{run}")
    rss: dict[str, int] = {}
    try:
        bench.drive(
            f"idle-warm-r{run}",
            "warm",
            20,
            ["--url", gw.url, "--prefix", f"r{run}"],
            warmup=0,
            duration=0,
            watch={},
        )
        time.sleep(1.0)
        rss["none"] = rss_kib(gw.pid)
        merged, cpu = bench.drive(
            f"idle-r{run}",
            "idle",
            cfg.idle_runners,
            [
                "--url",
                gw.url,
                "--prefix",
                f"r{run}",
                "--interval",
                str(cfg.idle_interval_s),
            ],
            warmup=cfg.idle_settle_s,
            duration=cfg.idle_window_s,
            watch={"server": gw.pid, "redis": bench.redis.pid},
            at_start=lambda: rss.__setitem__("start", rss_kib(gw.pid)),
            at_end=lambda: rss.__setitem__("end", rss_kib(gw.pid)),
        )
    finally:
        bench.stop(gw)
    k = cfg.idle_runners
    per_conn = (rss["end"] - rss["none"]) / k
    info = merged.info()
    info.update({f"rss_kib_{key}": value for key, value in rss.items()})
    measurement = [
        Measurement(
            "idle",
            run,
            {
                "rss_kib_per_conn": per_conn,
                "server_cpu_pct": cpu["server"],
                "heartbeats_per_s": merged.rate("heartbeat"),
                "heartbeat_p99_ms": merged.p("heartbeat", 99),
                "errors_per_s": merged.errors / merged.window_s,
            },
            cpu,
            info,
        )
    ]
    return with_server_logs(measurement, gw)


def service(bench: Bench, run: int) -> list[Measurement]:
    cfg = bench.cfg
    argv = [
        sys.executable,
        "-m",
        "bench.service",
        "--redis-url",
        bench.redis.url,
        "--tasks",
        str(cfg.service_tasks),
        "--seconds",
        str(cfg.service_seconds),
    ]
    if cfg.quick:
        argv += ["--min-requests", "2000"]
    proc = bench.procs.spawn(f"service-r{run}", argv, cpu=cfg.gateway_cpu, pipes=True)
    try:
        result = json.loads(LineChannel(proc).expect("RESULT", 300))
    finally:
        bench.procs.stop(proc)
    out = []
    for method in result["methods"]:
        out.append(
            Measurement(
                f"service:{method['method']}",
                run,
                {
                    "python_ops_per_s": float(method["python_ops_s"]),
                    "redis_benchmark_ops_per_s": float(method["redis_benchmark_ops_s"]),
                    "ratio": float(method["ratio"]) if method["ratio"] is not None else math.nan,
                },
                {},
                {"commands": method["commands"]},
            )
        )
    return out


def fanout(bench: Bench, run: int) -> list[Measurement]:
    """The relay path on stock python-socketio: in-process manager vs AsyncRedisManager."""
    out = []
    local = bench.bare(f"bare-local-r{run}")
    try:
        out.append(_relay_on(bench, local, local, f"fanout-local-r{run}", run, "fanout:local"))
    finally:
        bench.stop(local)
    bench.redis.flush()
    redis1 = bench.bare(f"bare-redis-r{run}", redis_manager=True)
    try:
        out.append(_relay_on(bench, redis1, redis1, f"fanout-redis-r{run}", run, "fanout:redis"))
    finally:
        bench.stop(redis1)
    bench.redis.flush()
    a = bench.bare(f"bare-redis2a-r{run}", redis_manager=True)
    b = bench.bare(f"bare-redis2b-r{run}", redis_manager=True)
    try:
        out.append(_relay_on(bench, a, b, f"fanout-redis2-r{run}", run, "fanout:redis2"))
    finally:
        bench.stop(a, b)
    return out


SCENARIOS: dict[str, Callable[[Bench, int], list[Measurement]]] = {
    "heartbeat": heartbeat,
    "ceiling": ceiling,
    "relay": relay,
    "relay2": relay2,
    "pair": pair,
    "idle": idle,
    "service": service,
    "fanout": fanout,
}


# -- profiling (not part of the table) ------------------------------------------------------


def profile(bench: Bench, docs: Path, py_spy: str) -> dict[str, Path]:
    """The heartbeat, relay and pair scenarios once each, with py-spy sampling the gateway.

    Writes ``docs/flame-<scenario>.svg`` (flame graph) and the collapsed stacks to
    ``bench/results/flame-<scenario>.txt``; these runs are not in the table (py-spy itself
    takes CPU on the generator's core).
    """
    cfg = bench.cfg
    written: dict[str, Path] = {}
    for name in ("heartbeat", "relay", "pair"):
        bench.redis.flush()
        gw = bench.gateway(f"gw-profile-{name}")
        svg = docs / f"flame-{name}.svg"
        raw = RESULTS / f"flame-{name}.txt"
        spies: list[Managed] = []

        def start_spies(
            gw: Server = gw,
            svg: Path = svg,
            raw: Path = raw,
            name: str = name,
            spies: list[Managed] = spies,
        ) -> None:
            for fmt, path in (("flamegraph", svg), ("raw", raw)):
                argv = [py_spy, "record", "--pid", str(gw.pid), "--duration"]
                argv += [str(int(cfg.duration_s)), "--rate", "200", "--nonblocking"]
                argv += ["--format", fmt, "-o", str(path)]
                spies.append(bench.procs.spawn(f"py-spy-{name}-{fmt}", argv, cpu=cfg.load_cpu))

        try:
            count = {
                "heartbeat": cfg.heartbeat_runners,
                "relay": cfg.relay_pairs,
                "pair": cfg.pair_workers,
            }[name]
            args = ["--url", gw.url, "--prefix", "prof"]
            bench.drive(
                f"profile-{name}",
                name,
                count,
                args,
                warmup=cfg.warmup_s,
                duration=cfg.duration_s,
                watch={"server": gw.pid},
                at_start=start_spies,
            )
            for spy in spies:
                spy.proc.wait(timeout=30)
        finally:
            for spy in spies:
                bench.procs.stop(spy)
            bench.stop(gw)
        written[name] = raw
    return written


_ROOT_FRAMES = ("_run_module_as_main ", "_run_code ", "<module> ", "main (", "run_app (")


def top_frames(
    collapsed: Path, limit: int = 15
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self, inclusive) shares of samples per frame, from py-spy's collapsed stacks."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            if not frame.startswith(_ROOT_FRAMES):  # the process's own entry points
                incl_counts[frame] = incl_counts.get(frame, 0) + count
    if total == 0:
        return [], []

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        return [(frame, 100 * n / total) for frame, n in ranked]

    return top(self_counts), top(incl_counts)


def package_shares(collapsed: Path) -> list[tuple[str, float]]:
    """Share of samples by the package of the innermost Python frame.

    py-spy (without --native) charges C code to the Python frame that called it; samples
    whose innermost frame is aiohttp's ``run_app`` are the event loop itself (uvloop's C
    code: polling, socket I/O, callbacks).
    """
    counts: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.split(";")[-1]
        where = leaf[leaf.rfind("(") + 1 : -1] if leaf.endswith(")") else leaf
        package = where.split("/", 1)[0] if "/" in where else where.split(":", 1)[0]
        if leaf.startswith("run_app "):
            package = "event loop (uvloop C code, I/O)"
        counts[package] = counts.get(package, 0) + int(n)
        total += int(n)
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    return [(name, 100 * n / total) for name, n in ranked if total]
