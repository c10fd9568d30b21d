"""Relay with end-to-end encrypted clients beside plain ones (``python -m bench.e2e``; part of
``make bench``): what encryption costs the gateway, and the clients.

The gateway relays E2E records as opaque binary, so its CPU per round trip should not change;
the clients do the crypto (XChaCha20-Poly1305 per message, a CPace handshake per pair). The
load generator is ``clients/js/bench/relay.mjs`` (the repository's JavaScript module over the
official socket.io-client): N app/runner pairs, each with one round trip in flight (app ->
runner -> app, ``--size`` bytes). Plain pairs send the same bytes unencrypted.

Each run: a fresh gateway (default configuration, the registration limit lifted: every client
registers from 127.0.0.1) pinned to CPU 0, a private redis-server and the load generator on
CPU 1; plain and E2E back to back, in alternating order. Measured: round trips/s, the
gateway's and the load generator's CPU per round trip (/proc), and the CPU used by other
processes meanwhile (a loaded machine makes the figures unreliable: the table says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.sections import write_section

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "js"
LOAD = PACKAGE / "bench" / "relay.mjs"
DOC = ROOT / "docs" / "benchmarks.md"
MARK_BEGIN = "<!-- bench.e2e:begin -->"
MARK_END = "<!-- bench.e2e:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ("plain", "e2e")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def busy_seconds() -> float:
    """CPU time used by everything on the machine (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    """Stop exactly the process we started, by pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + argv


@dataclass
class Result:
    mode: str
    ops_per_s: float
    round_trips: int
    gateway_us: float  # gateway CPU per round trip
    load_us: float  # load generator CPU per round trip
    other_cores: float  # CPU of other processes during the window, in cores
    p50_ms: float
    p99_ms: float
    errors: int


def run_once(mode: str, args: argparse.Namespace, node: str, workdir: Path) -> Result:
    redis_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[Any]] = []
    log: IO[bytes] = (workdir / f"{mode}-{time.time_ns()}.log").open("wb")
    try:
        redis = subprocess.Popen(
            pinned(1, ["redis-server", "--port", str(redis_port), "--save", ""]),
            stdout=log,
            stderr=log,
            cwd=workdir,
        )
        procs.append(redis)
        wait_port(redis_port, redis, "redis-server")
        env = {**os.environ, "PAIRING_RATE_LIMIT_REGISTRATIONS": "100000000"}
        gateway = subprocess.Popen(
            pinned(
                0,
                [
                    str(ROOT / ".venv" / "bin" / "pairing-gateway"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(gw_port),
                    "--redis-url",
                    f"redis://127.0.0.1:{redis_port}/0",
                ],
            ),
            stdout=log,
            stderr=log,
            env=env,
        )
        procs.append(gateway)
        wait_port(gw_port, gateway, "the gateway")
        config = {
            "url": f"http://127.0.0.1:{gw_port}",
            "mode": mode,
            "pairs": args.pairs,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "size": args.size,
        }
        load = subprocess.Popen(
            pinned(1, [node, str(LOAD), json.dumps(config)]),
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=PACKAGE,
            text=True,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        procs.append(load)
        assert load.stdout is not None
        marks: dict[str, tuple[float, float, float, float, float]] = {}
        result: dict[str, Any] = {}
        for line in load.stdout:
            event = json.loads(line)
            if event["event"] in ("measuring", "measured"):
                marks[event["event"]] = (
                    time.monotonic(),
                    cpu_seconds(gateway.pid),
                    cpu_seconds(load.pid),
                    cpu_seconds(redis.pid),
                    busy_seconds(),
                )
            elif event["event"] == "result":
                result = event
        load.wait(timeout=60)
        if not result or len(marks) != 2:
            raise RuntimeError(f"the load generator failed ({load.returncode}); log in {log.name}")
        (t0, g0, l0, r0, b0), (t1, g1, l1, r1, b1) = marks["measuring"], marks["measured"]
        rounds = max(1, int(result["round_trips"]))
        ours = (g1 - g0) + (l1 - l0) + (r1 - r0)
        return Result(
            mode=mode,
            ops_per_s=float(result["ops_per_s"]),
            round_trips=rounds,
            gateway_us=(g1 - g0) / rounds * 1e6,
            load_us=(l1 - l0) / rounds * 1e6,
            other_cores=max(0.0, (b1 - b0) - ours) / (t1 - t0),
            p50_ms=float(result["p50_ms"] or 0),
            p99_ms=float(result["p99_ms"] or 0),
            errors=int(result["errors"]),
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(results: dict[str, list[Result]], args: argparse.Namespace, minutes: float) -> str:
    def cell(values: list[float], fmt: str) -> str:
        return f"{med(values):{fmt}} ({', '.join(f'{v:{fmt}}' for v in values)})"

    rows = []
    for mode in MODES:
        rs = results[mode]
        rows.append(
            f"| {'end-to-end encrypted' if mode == 'e2e' else 'plain'} "
            f"| {cell([r.ops_per_s for r in rs], ',.0f')} "
            f"| {cell([r.gateway_us for r in rs], ',.0f')} "
            f"| {cell([r.load_us for r in rs], ',.0f')} "
            f"| {med([r.p50_ms for r in rs]):.1f} / {med([r.p99_ms for r in rs]):.1f} "
            f"| {max(r.other_cores for r in rs):.2f} "
            f"| {sum(r.errors for r in rs)} |"
        )
    plain, e2e = results["plain"], results["e2e"]
    ratio_ops = med([r.ops_per_s for r in e2e]) / med([r.ops_per_s for r in plain])
    ratio_gw = med([r.gateway_us for r in e2e]) / med([r.gateway_us for r in plain])
    busiest = max(r.other_cores for rs in results.values() for r in rs)
    quiet = (
        "The machine was quiet (other processes used at most "
        f"{busiest:.2f} of a core during any measured window)."
        if busiest <= 0.1
        else f"**The machine was not quiet**: other processes used up to {busiest:.2f} cores "
        "during a measured window, so these figures are indicative only; run `make bench` "
        "again on an idle machine."
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    taken = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            MARK_BEGIN,
            "## Relay with end-to-end encrypted clients",
            "",
            f"`python -m bench.e2e` (part of `make bench`): {args.pairs} app/runner pairs, one "
            f"round trip of {args.size} bytes in flight per pair, through the gateway (CPU 0) "
            "and a private redis-server; the load generator is `clients/js/bench/relay.mjs` "
            "(the repository's JavaScript module over the official socket.io-client, CPU 1). "
            "Plain pairs send the bytes as they are; encrypted pairs run a CPace handshake "
            "once, then send every message as an XChaCha20-Poly1305 record (59 bytes more). "
            f"{args.runs} runs per mode, back to back in alternating order, {args.seconds} s "
            f"measured after {args.warmup} s of warm-up; medians (each run's figure in "
            f"brackets). Taken {taken}, {minutes:.1f} min, commit {commit}.",
            "",
            "| clients | round trips/s | gateway CPU µs per round trip | load generator CPU µs "
            "per round trip | latency p50 / p99 ms | other processes, cores | errors |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Encrypted / plain: {ratio_ops:.2f}x the round trips/s, {ratio_gw:.2f}x the "
            "gateway's CPU per round trip. The gateway relays records as opaque binary; what "
            "encryption adds is the clients' work (the load generator's column) and 59 bytes "
            f"per message. {quiet}",
            "",
            MARK_END,
            "",
        ]
    )


def node_ready() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("bench: node is not installed (Node.js >= 20.19 and npm)")
    if not (PACKAGE / "node_modules" / "@noble" / "curves").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("bench: npm is not installed")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True)
    return node


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="bytes per message")
    p.add_argument("--no-docs", action="store_true", help="print only; leave the docs alone")
    args = p.parse_args(argv)
    if not (ROOT / ".venv" / "bin" / "pairing-gateway").exists():
        raise SystemExit("bench: .venv/bin/pairing-gateway is missing (make install)")
    node = node_ready()
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    print(f"bench.e2e: logs in {workdir}", file=sys.stderr)
    started = time.monotonic()
    results: dict[str, list[Result]] = {m: [] for m in MODES}
    for run in range(args.runs):
        for mode in MODES if run % 2 == 0 else MODES[::-1]:
            result = run_once(mode, args, node, workdir)
            results[mode].append(result)
            print(f"bench.e2e: run {run + 1} {json.dumps(result.__dict__)}", file=sys.stderr)
    text = render(results, args, (time.monotonic() - started) / 60)
    print(text)
    if not args.no_docs:
        write_section(DOC, text, MARK_BEGIN, MARK_END)
        print(f"bench.e2e: wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
