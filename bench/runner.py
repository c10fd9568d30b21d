"""``python -m bench``: run the scenarios, print the table, write docs/benchmarks.{md,png}.

Every process it starts (redis-server, gateways, bare servers, load generators, the service
benchmark, py-spy) is recorded and stopped by pid on the way out, also on Ctrl-C, SIGTERM
or an error; children also get SIGKILL from the kernel if this process dies first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from bench import report
from bench.procs import RESULTS, ROOT, Procs, RedisServer, raise_nofile_limit
from bench.scenarios import (
    SCENARIOS,
    Bench,
    BenchConfig,
    Measurement,
    package_shares,
    profile,
    top_frames,
)

DOCS = ROOT / "docs"


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    return float(raw) if raw else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway. Environment: BENCH_RUNS, "
        "BENCH_DURATION, BENCH_SCENARIOS, BENCH_QUICK=1 set the same as the flags.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK") == "1",
        help="one short run of everything (about a minute), 1,000 idle runners",
    )
    p.add_argument("--runs", type=int, help="runs of every scenario (default 3)")
    p.add_argument("--duration", type=float, help="measurement window, s (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up before each window, s (default 2)")
    p.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--heartbeat-runners", type=int, help="N (default 200)")
    p.add_argument("--relay-pairs", type=int, help="P (default 100)")
    p.add_argument("--pair-workers", type=int, help="W (default 50)")
    p.add_argument("--idle-runners", type=int, help="K (default 5000)")
    p.add_argument("--idle-window", type=float, help="idle measurement window, s (default 10)")
    p.add_argument("--service-seconds", type=float, help="per method (default 1)")
    p.add_argument("--generator-procs", type=int, help="load generator processes (default 1)")
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite docs/ from bench/results/latest.json without running",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the table: heartbeat, relay and pair once with py-spy on the gateway"
        " (docs/flame-*.svg, top frames printed)",
    )
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig.quick_mode() if args.quick else BenchConfig()
    runs = args.runs or (int(os.environ["BENCH_RUNS"]) if os.environ.get("BENCH_RUNS") else None)
    duration = args.duration or _env_float("BENCH_DURATION")
    overrides: dict[str, Any] = {
        "runs": runs,
        "duration_s": duration,
        "warmup_s": args.warmup,
        "heartbeat_runners": args.heartbeat_runners,
        "relay_pairs": args.relay_pairs,
        "pair_workers": args.pair_workers,
        "idle_runners": args.idle_runners,
        "idle_window_s": args.idle_window,
        "service_seconds": args.service_seconds,
        "generator_procs": args.generator_procs,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def selected(args: argparse.Namespace) -> list[str]:
    raw = args.scenarios or os.environ.get("BENCH_SCENARIOS") or ",".join(SCENARIOS)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return names


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    if args.report_only:
        return write_reports_from(latest)

    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (util-linux)")
    if (os.cpu_count() or 1) < 2:
        print("bench: fewer than 2 CPUs; pinning will overlap", file=sys.stderr)
    with contextlib.suppress(OSError):  # the orchestrator mostly sleeps; not on the gateway's CPU
        os.sched_setaffinity(0, {cfg.load_cpu})
    soft, _ = raise_nofile_limit()
    needed = 2 * cfg.idle_runners + 1000
    if soft < needed:
        print(
            f"bench: open-file limit {soft} < {needed}; the idle scenario may fail", file=sys.stderr
        )

    signal.signal(signal.SIGTERM, _on_sigterm)
    procs = Procs()
    redis = RedisServer(procs, cpu=cfg.load_cpu)
    started_wall = report.now_utc()
    started = time.monotonic()
    measurements: list[Measurement] = []
    failures: list[str] = []
    code = 0
    try:
        redis.start()
        bench = Bench(cfg, procs, redis)
        if args.profile:
            return run_profile(bench)
        names = selected(args)
        print(
            f"bench: {cfg.runs} run(s) of {', '.join(names)}; window {cfg.duration_s:g} s"
            f" (+{cfg.warmup_s:g} s warm-up); redis-server pid {redis.pid} on CPU"
            f" {cfg.load_cpu}",
            flush=True,
        )
        for run in range(cfg.runs):
            for name in names:
                redis.flush()
                t = time.monotonic()
                try:
                    got = SCENARIOS[name](bench, run)
                except Exception as exc:
                    failures.append(f"{name} run {run + 1}: {exc!r}"[:2000])
                    print(f"bench: {name} run {run + 1} FAILED:", file=sys.stderr)
                    traceback.print_exc()
                    procs_left = [m.name for m in procs.running if m is not redis.managed]
                    for leftover in [m for m in procs.running if m.name in procs_left]:
                        procs.stop(leftover)
                    continue
                measurements.extend(got)
                print(
                    f"  run {run + 1}/{cfg.runs} {name:<9} {time.monotonic() - t:5.1f}s  "
                    + "; ".join(_brief(m) for m in got),
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            redis.stop()
        finally:
            procs.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if code:
        return code

    elapsed = time.monotonic() - started
    machine = report.machine_info()
    payload = {
        "config": cfg.__dict__,
        "started": started_wall.isoformat(),
        "elapsed_s": elapsed,
        "machine": machine,
        "failures": failures,
        "measurements": report.as_rows(measurements),
    }
    latest.write_text(json.dumps(payload, indent=1))
    all_m = report.with_derived(measurements)
    for table in (
        report.main_table(cfg, all_m),
        report.service_table(all_m),
        report.fanout_table(all_m),
        report.resource_table(all_m),
    ):
        if len(table) > 1:
            print()
            print(report.text_table(table))
    for note in report.notes(all_m):
        print(f"note: {note}")
    if not args.no_docs:
        write_docs(cfg, all_m, machine, started_wall, elapsed, failures)
    print(f"\nbench: done in {elapsed / 60:.1f} min; raw results in {latest.relative_to(ROOT)}")
    if failures:
        print("bench: some scenario runs failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def _brief(m: Measurement) -> str:
    shown = []
    for key, value in list(m.metrics.items())[:3]:
        shown.append(f"{key}={value:,.1f}" if not math.isnan(value) else f"{key}=-")
    gen = m.cpu.get("generator")
    if gen is not None:
        shown.append(f"gen_cpu={gen:.0f}%")
    return f"{m.scenario}: " + " ".join(shown)


def write_docs(
    cfg: BenchConfig,
    measurements: list[Measurement],
    machine: dict[str, str],
    started: Any,
    elapsed: float,
    failures: list[str],
) -> None:
    md = DOCS / "benchmarks-lean.md"
    png = DOCS / "benchmarks-lean.png"
    md.write_text(report.render_markdown(cfg, measurements, machine, started, elapsed, failures))
    try:
        report.render_chart(cfg, measurements, png)
    except ImportError:
        print(
            "bench: matplotlib is missing (make bench installs it from uv.lock); no chart",
            file=sys.stderr,
        )
    print(f"bench: wrote {md.relative_to(ROOT)} and {png.relative_to(ROOT)}")


def write_reports_from(latest: Path) -> int:
    from datetime import datetime

    data = json.loads(latest.read_text())
    cfg = BenchConfig(**data["config"])
    measurements = [
        Measurement(r["scenario"], r["run"], r["metrics"], r["cpu"], r["info"])
        for r in data["measurements"]
    ]
    all_m = report.with_derived(measurements)
    print(report.text_table(report.main_table(cfg, all_m)))
    write_docs(
        cfg,
        all_m,
        data["machine"],
        datetime.fromisoformat(data["started"]),
        data["elapsed_s"],
        data["failures"],
    )
    return 0


def run_profile(bench: Bench) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: make bench installs it from uv.lock")
    written = profile(bench, DOCS, py_spy)
    lines: list[str] = []
    for name, raw in written.items():
        if not raw.exists():
            print(f"bench: py-spy wrote no samples for {name}", file=sys.stderr)
            continue
        own, inclusive = top_frames(raw)
        lines.append(f"== {name}: docs/flame-{name}.svg; own time by package (% of samples)")
        lines += [f"  {share:5.1f}%  {package}" for package, share in package_shares(raw)[:12]]
        lines.append(f"== {name}: top frames by own time")
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in own]
        lines.append(f"== {name}: top frames by inclusive time")
        lines += [f"  {share:5.1f}%  {frame}" for frame, share in inclusive]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (RESULTS / "profile.txt").write_text(text)
    return 0
