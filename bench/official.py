"""``make bench``: the headline figures, with the official socket.io-client as load generator.

Users' apps and runners speak through socket.io-client (and clients like it: permessage-deflate
offered, one websocket per socket), so that is what drives the gateway here, not the lean
Python client of an earlier benchmark. The load generator is an external
kit (``--kit``, env ``BENCH_KIT``): ``bench/compare.sh`` starts a private redis-server and the
server under test (CPU 0), and drives it with ``bench/load.js`` (CPU 1), one fresh server per
run; scenarios heartbeat (200 runners), relay (100 app/runner pairs), pair (50 workers:
register -> pair -> unpair), idle (2,000 runners held, server RSS per connection).

With ``--reference "<command>"`` (``make bench BENCH_REFERENCE=...``) a second gateway of the
same contract is measured in the same session: for every scenario and run the two servers run
back to back, in alternating order, under the same conditions, and the ratios (ours /
reference, medians of the paired runs) go into docs/benchmarks.md with every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
#: Every load client connects from 127.0.0.1, one address: the per-address registration limit
#: (60 per minute by default) would refuse all but the first 60 runners, and the gateway
#: measured beside ours (``--reference``) need not have one, so it is lifted here and nothing
#: else is changed.
OURS = [
    "env",
    "PAIRING_RATE_LIMIT_REGISTRATIONS=100000000",
    str(ROOT / ".venv" / "bin" / "pairing-gateway"),
]


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    field: str
    unit: str
    higher_is_better: bool
    goal: float  # ours / reference at least (throughput) or at most (memory)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("heartbeat", "heartbeat, 200 runners", "ops_per_s", "acks/s", True, 0.75),
        Scenario("relay", "relay, 100 pairs", "ops_per_s", "round trips/s", True, 0.75),
        Scenario("pair", "pair, 50 workers", "ops_per_s", "pairings/s", True, 0.70),
        Scenario(
            "idle", "idle, 2,000 runners", "kib_per_connection", "KiB per connection", False, 1.0
        ),
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.official", description=__doc__)
    p.add_argument("--reference", default="", help="command of the gateway to compare with")
    p.add_argument("--reference-label", default="reference")
    p.add_argument("--kit", default=os.environ.get("BENCH_KIT", ""), help="load-generator kit")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--scenarios", default="heartbeat,relay,pair,idle")
    p.add_argument("--max-other", type=int, default=10, help="compare.sh --max-other")
    p.add_argument("--out", default="", help="folder for the raw results (default: a temp dir)")
    p.add_argument("--no-docs", action="store_true", help="print only; leave the docs alone")
    p.add_argument("--ours", default=shlex.join(OURS), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def kit_path(arg: str) -> Path:
    kit = Path(arg or Path.home() / ".cache" / "pairing-reference").expanduser()
    if not (kit / "bench" / "compare.sh").is_file():
        raise SystemExit(
            f"bench: no load-generator kit at {kit} (bench/compare.sh, bench/load.js with the "
            "official socket.io-client); set BENCH_KIT=<folder>"
        )
    return kit


def run_once(
    kit: Path, args: argparse.Namespace, scenario: str, label: str, cmd: str, out: Path
) -> dict[str, Any]:
    """One compare.sh run of one scenario: its results line (``failed`` set if there is none)."""
    folder = out / f"{label}-{scenario}-{len(list(out.glob(f'{label}-{scenario}-*')))}"
    argv = [
        str(kit / "bench" / "compare.sh"),
        *("--runs", "1", "--seconds", str(args.seconds), "--warmup", str(args.warmup)),
        *("--scenarios", scenario, "--label", label, "--out", str(folder)),
        *("--max-other", str(args.max_other), "--"),
        *shlex.split(cmd),
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = (folder / "results.jsonl").read_text().splitlines() if folder.exists() else []
    took = time.monotonic() - started
    if not lines:
        tail = (proc.stderr or proc.stdout)[-800:]
        return {"scenario": scenario, "tag": label, "failed": f"no result: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    value = result.get(SCENARIOS[scenario].field)
    print(
        f"bench: {scenario:9} {label:10} {value} (errors {result.get('errors')},"
        f" other cpu {result.get('other_cpu_pct')}%, {took:.0f} s)",
        file=sys.stderr,
    )
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def value_of(result: dict[str, Any], scenario: Scenario) -> float | None:
    if result.get("failed"):
        return None
    v = result.get(scenario.field)
    return float(v) if isinstance(v, int | float) else None


def summarize(
    results: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for name, by_label in results.items():
        sc = SCENARIOS[name]
        row: dict[str, Any] = {"scenario": sc, "runs": {}, "errors": {}, "p99": {}}
        for label in labels:
            rs = by_label.get(label, [])
            vals = [v for r in rs if (v := value_of(r, sc)) is not None]
            row["runs"][label] = vals
            row["errors"][label] = sum(int(r.get("errors") or 0) for r in rs) + sum(
                1 for r in rs if r.get("failed")
            )
            row["p99"][label] = median([r["p99_ms"] for r in rs if r.get("p99_ms") is not None])
        if len(labels) == 2:
            ours, ref = (median(row["runs"][lb]) for lb in labels)
            row["ratio"] = ours / ref if ref else float("nan")
            pairs = zip(row["runs"][labels[0]], row["runs"][labels[1]], strict=False)
            row["paired"] = [a / b for a, b in pairs if b]
        rows.append(row)
    return rows


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    head = ["scenario", "metric", *(f"{lb} (median)" for lb in labels)]
    if len(labels) == 2:
        head += ["ratio", "paired runs' ratios", "goal", "met"]
    head += [f"errors ({lb})" for lb in labels]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sc: Scenario = row["scenario"]
        cells = [sc.label, sc.unit] + [
            f"{fmt(median(row['runs'][lb]))} ({', '.join(fmt(v) for v in row['runs'][lb])})"
            for lb in labels
        ]
        if len(labels) == 2:
            ratio = row["ratio"]
            met = ratio >= sc.goal if sc.higher_is_better else ratio <= sc.goal
            errors_free = not any(row["errors"].values())
            cells += [
                f"{ratio:.2f}x",
                ", ".join(f"{r:.2f}" for r in row["paired"]),
                ("≥ " if sc.higher_is_better else "≤ ") + f"{sc.goal:.2f}x",
                "yes" if met and errors_free else "no",
            ]
        cells += [str(row["errors"][lb]) for lb in labels]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def versions() -> str:
    from importlib.metadata import version

    pkgs = ("python-socketio", "python-engineio", "aiohttp", "redis", "hiredis", "msgspec")
    found = "; ".join(f"{p} {version(p)}" for p in pkgs)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}; {os.cpu_count()} cores; python {platform.python_version()}; {found};"
        f" commit {commit}"
    )


def document(
    rows: list[dict[str, Any]], labels: list[str], args: argparse.Namespace, minutes: float
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ref = f"`{args.reference}`" if args.reference else "none"
    return f"""# Benchmarks

Generated by `make bench` (`bench/official.py`), except the sections it carries over from the
page it replaces: the figures kept by hand, and `make bench-cluster`'s two (`bench/cluster.py`,
`bench/cluster_official.py`).

- **Load generator**: the official socket.io-client 4.8 under Node (websocket transport, as it
  offers it: permessage-deflate offered), `bench/compare.sh` + `bench/load.js` of the
  load-generator kit (`BENCH_KIT`). Each run: a fresh server pinned to CPU 0, the load
  generator and a private redis-server on CPU 1; a run during which other processes used more
  than {args.max_other}% of a core is redone (at most 3 tries).
- **Servers**: ours = `.venv/bin/pairing-gateway` (default configuration, except
  `rate_limit.registrations` lifted: every load client registers from 127.0.0.1);
  {labels[-1]} = {ref}.
  Both get `--host 127.0.0.1 --port P --redis-url URL`.
- **Runs**: {args.runs} per scenario and server, the two servers back to back for every run, in
  alternating order; {args.seconds} s measured after {args.warmup} s of warm-up.
  *ratio* = median(ours) / median({labels[-1]}); for memory lower is better, so the goal is
  a ratio ≤ 1. *paired runs' ratios*: each run's ours / {labels[-1]}.
- **Taken**: {now}, {minutes:.1f} min. **Machine**: {versions()}.

{table(rows, labels)}

Absolute figures drift between machines of one class by 2x and more; the ratios between two
servers measured in the same session are what this page is for. When the load generator's CPU
is near 100% (it is when the faster server runs), ratios above about 0.85 cannot be told apart.
"""


#: The sections this page keeps from one run to the next: the figures kept by hand, then
#: ``make bench-cluster``'s (bench/cluster.py, bench/cluster_official.py) and the E2E
#: relay's (bench/e2e.py).
KEPT_BEGIN = "<!-- bench:kept-by-hand:begin -->"
KEPT_END = "<!-- bench:kept-by-hand:end -->"


def keep_sections(md: Path, text: str) -> str:
    """Append to the generated ``text`` the sections of ``md`` that other tools or people own."""
    from bench import cluster, cluster_official, e2e

    old = md.read_text() if md.exists() else ""
    for begin, end in (
        (KEPT_BEGIN, KEPT_END),
        (cluster.MARK_BEGIN, cluster.MARK_END),
        (cluster_official.MARK_BEGIN, cluster_official.MARK_END),
        (e2e.MARK_BEGIN, e2e.MARK_END),
    ):
        if begin in old and end in old:
            section = begin + old.split(begin, 1)[1].split(end, 1)[0] + end
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit = kit_path(args.kit)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"bench: unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    if not Path(shlex.split(args.ours)[-1]).exists():
        raise SystemExit(f"bench: {args.ours} is missing (make install)")
    sides = [("ours", args.ours)]
    if args.reference:
        sides.append((args.reference_label, args.reference))
    labels = [label for label, _ in sides]
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-official-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench: raw results in {out}", file=sys.stderr)
    started = time.monotonic()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    for run in range(args.runs):
        for name in names:
            order = sides if run % 2 == 0 else sides[::-1]
            for label, cmd in order:
                result = run_once(kit, args, name, label, cmd, out)
                results[name].setdefault(label, []).append(result)
                with (out / "all.jsonl").open("a") as f:
                    f.write(json.dumps(result) + "\n")
    minutes = (time.monotonic() - started) / 60
    rows = summarize(results, labels)
    print(table(rows, labels))
    if not args.no_docs:
        DOC.write_text(keep_sections(DOC, document(rows, labels, args, minutes)))
        print(f"bench: wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
