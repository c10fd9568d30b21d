"""docs/benchmarks-lean.md and .png from the measurements of one ``make bench-lean``."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import ROOT
from bench.scenarios import BenchConfig, Measurement
from bench.stats import Summary


@dataclass(frozen=True)
class Row:
    scenario: str  # key in the measurements
    metric: str  # key in Measurement.metrics
    title: str  # scenario column
    label: str  # metric column
    unit: str
    reference: float | None = None  # a comparison figure, where one applies
    higher_is_better: bool = True
    goal: str = ""  # "60%" (throughput) or "<=" (memory at or below the reference)


def rows(cfg: BenchConfig) -> list[Row]:
    hb = f"heartbeat, {cfg.heartbeat_runners} runners"
    ceil = f"ceiling: bare python-socketio, {cfg.heartbeat_runners} runners"
    rl = f"relay, {cfg.relay_pairs} pairs, one replica"
    rl2 = f"relay, {cfg.relay_pairs} pairs, two replicas (both on CPU {cfg.gateway_cpu})"
    pr = f"pair, {cfg.pair_workers} workers"
    idl = f"idle, {cfg.idle_runners:,} runners"
    return [
        Row("heartbeat", "acks_per_s", hb, "acks/s", "/s"),
        Row("heartbeat", "p50_ms", hb, "ack p50", "ms", None, False),
        Row("heartbeat", "p99_ms", hb, "ack p99", "ms", None, False),
        Row("heartbeat", "errors_per_s", hb, "failures/s", "/s", None, False),
        Row("ceiling", "acks_per_s", ceil, "acks/s", "/s"),
        Row("ceiling", "p50_ms", ceil, "ack p50", "ms", None, False),
        Row("ceiling", "p99_ms", ceil, "ack p99", "ms", None, False),
        Row("gw/ceiling", "ratio_pct", "gateway / ceiling (same run)", "heartbeat acks/s (%)", "%"),
        Row("relay", "round_trips_per_s", rl, "round trips/s", "/s"),
        Row("relay", "p50_ms", rl, "round trip p50", "ms", None, False),
        Row("relay", "p99_ms", rl, "round trip p99", "ms", None, False),
        Row("relay", "errors_per_s", rl, "failures/s", "/s", None, False),
        Row("relay2", "round_trips_per_s", rl2, "round trips/s", "/s"),
        Row("relay2", "p50_ms", rl2, "round trip p50", "ms", None, False),
        Row("relay2", "p99_ms", rl2, "round trip p99", "ms", None, False),
        Row("relay2", "errors_per_s", rl2, "failures/s", "/s", None, False),
        Row("pair", "pairings_per_s", pr, "pairings/s", "/s"),
        Row("pair", "app_pair_p50_ms", pr, "app:pair p50", "ms", None, False),
        Row("pair", "app_pair_p99_ms", pr, "app:pair p99", "ms", None, False),
        Row("pair", "loop_p99_ms", pr, "register+pair+unpair p99", "ms", None, False),
        Row("pair", "errors_per_s", pr, "failures/s", "/s", None, False),
        Row("idle", "rss_kib_per_conn", idl, "RSS per connection", "KiB", None, False),
        Row("idle", "server_cpu_pct", idl, "gateway CPU while idle", "% of a core", None, False),
        Row("idle", "heartbeat_p99_ms", idl, "heartbeat ack p99", "ms", None, False),
        Row("idle", "errors_per_s", idl, "failures/s", "/s", None, False),
    ]


def with_derived(measurements: list[Measurement]) -> list[Measurement]:
    """Add gateway/ceiling per run (both measured in the same run)."""
    out = list(measurements)
    by_run: dict[int, dict[str, Measurement]] = {}
    for m in measurements:
        by_run.setdefault(m.run, {})[m.scenario] = m
    for run, scen in sorted(by_run.items()):
        if "heartbeat" in scen and "ceiling" in scen:
            gw, ceil = (
                scen["heartbeat"].metrics["acks_per_s"],
                scen["ceiling"].metrics["acks_per_s"],
            )
            ratio = 100 * gw / ceil if ceil else math.nan
            out.append(Measurement("gw/ceiling", run, {"ratio_pct": ratio}))
    return out


def summarize(measurements: list[Measurement], scenario: str, metric: str) -> Summary:
    return Summary.of(
        m.metrics.get(metric, math.nan) for m in measurements if m.scenario == scenario
    )


def summarize_cpu(measurements: list[Measurement], scenario: str, who: str) -> Summary:
    return Summary.of(m.cpu.get(who, math.nan) for m in measurements if m.scenario == scenario)


def fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        return f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    if unit == "KiB":
        return f"{value:.1f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def main_table(cfg: BenchConfig, measurements: list[Measurement]) -> list[list[str]]:
    """This run's figures alone: a comparison with another server is ``make bench``'s job,
    which measures both in one session (docs/benchmarks.md)."""
    table = [["scenario", "metric", "median", "min", "max"]]
    for row in rows(cfg):
        s = summarize(measurements, row.scenario, row.metric)
        if s.n == 0:
            continue
        unit = "" if row.unit in {"/s", "%"} else f" ({row.unit})"
        table.append(
            [
                row.title,
                row.label + unit,
                fmt(s.median, row.unit),
                fmt(s.low, row.unit),
                fmt(s.high, row.unit),
            ]
        )
    return table


def service_table(measurements: list[Measurement]) -> list[list[str]]:
    methods = sorted(
        {m.scenario for m in measurements if m.scenario.startswith("service:")},
        key=lambda name: [m.scenario for m in measurements].index(name),
    )
    table = [
        [
            "PairingSessionService method",
            "Redis commands",
            "Python ops/s (median)",
            "redis-benchmark ops/s (median)",
            "ratio median",
            "ratio min",
            "ratio max",
        ]
    ]
    for name in methods:
        py = summarize(measurements, name, "python_ops_per_s")
        rb = summarize(measurements, name, "redis_benchmark_ops_per_s")
        ratio = summarize(measurements, name, "ratio")
        cmds = next(m.info.get("commands", []) for m in measurements if m.scenario == name)
        table.append(
            [
                name.split(":", 1)[1],
                " + ".join(cmds),
                fmt(py.median),
                fmt(rb.median),
                f"{100 * ratio.median:.0f}%",
                f"{100 * ratio.low:.0f}%",
                f"{100 * ratio.high:.0f}%",
            ]
        )
    return table


FANOUT_VARIANTS = [
    ("fanout:local", "stock python-socketio, in-process manager, one process"),
    ("fanout:redis", "stock python-socketio, AsyncRedisManager, one process"),
    ("fanout:redis2", "stock python-socketio, AsyncRedisManager, two processes"),
    ("relay", "gateway, per-room fan-out, one replica"),
    ("relay2", "gateway, per-room fan-out, two replicas"),
]


def fanout_table(measurements: list[Measurement]) -> list[list[str]]:
    """Round trips/s per relay path; the ratio to the in-process manager is taken per run."""
    table = [
        [
            "relay path",
            "round trips/s (median)",
            "min",
            "max",
            "p50 ms",
            "p99 ms",
            "vs stock in-process (median of per-run ratios, min-max)",
        ]
    ]
    base = {
        m.run: m.metrics["round_trips_per_s"] for m in measurements if m.scenario == "fanout:local"
    }
    for key, title in FANOUT_VARIANTS:
        s = summarize(measurements, key, "round_trips_per_s")
        if s.n == 0:
            continue
        p50 = summarize(measurements, key, "p50_ms").median
        p99 = summarize(measurements, key, "p99_ms").median
        ratios = Summary.of(
            100 * m.metrics["round_trips_per_s"] / base[m.run]
            for m in measurements
            if m.scenario == key and base.get(m.run)
        )
        ratio = (
            "" if ratios.n == 0 else f"{ratios.median:.0f}% ({ratios.low:.0f}-{ratios.high:.0f}%)"
        )
        table.append(
            [title, fmt(s.median), fmt(s.low), fmt(s.high), fmt(p50, "ms"), fmt(p99, "ms"), ratio]
        )
    return table


RESOURCE_SCENARIOS = [
    ("heartbeat", "heartbeat"),
    ("ceiling", "ceiling (bare server)"),
    ("relay", "relay, one replica"),
    ("relay2", "relay, two replicas"),
    ("pair", "pair"),
    ("idle", "idle"),
    ("fanout:local", "relay on stock python-socketio"),
    ("fanout:redis", "relay on stock + AsyncRedisManager"),
    ("fanout:redis2", "relay on stock + AsyncRedisManager, 2 processes"),
]


def resource_table(measurements: list[Measurement]) -> list[list[str]]:
    table = [["scenario", "server(s) CPU %", "load generator CPU %", "redis-server CPU %"]]
    for key, title in RESOURCE_SCENARIOS:
        server = summarize_cpu(measurements, key, "server")
        if server.n == 0:
            continue
        gen = summarize_cpu(measurements, key, "generator")
        red = summarize_cpu(measurements, key, "redis")
        table.append(
            [
                title,
                f"{server.median:.0f}",
                f"{gen.median:.0f} (max {gen.high:.0f})",
                f"{red.median:.0f}",
            ]
        )
    return table


def notes(measurements: list[Measurement]) -> list[str]:
    out: list[str] = []
    by_scenario: dict[str, dict[str, int]] = {}
    for m in measurements:
        codes = m.info.get("error_codes") or {}
        for code, n in codes.items():
            bucket = by_scenario.setdefault(m.scenario, {})
            bucket[code] = bucket.get(code, 0) + int(n)
    logs: dict[str, dict[str, int]] = {}
    for m in measurements:
        for key, n in (m.info.get("server_log") or {}).items():
            bucket = logs.setdefault(m.scenario, {})
            bucket[key] = bucket.get(key, 0) + int(n)
    for scenario, codes in by_scenario.items():
        listed = ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))
        out.append(f"`{scenario}`: failures inside the windows, all runs: {listed}.")
    for scenario, entries in logs.items():
        listed = "; ".join(f"{key} x{n}" for key, n in entries.items())
        out.append(f"`{scenario}`: the gateway logged (whole runs, top 3): {listed}.")
    for m in measurements:
        gen = m.cpu.get("generator")
        if gen is not None and gen > 85:
            out.append(
                f"`{m.scenario}` run {m.run}: the load generator used {gen:.0f}% of its core;"
                " it may have limited the result."
            )
        if m.info.get("unfinished"):
            out.append(
                f"`{m.scenario}` run {m.run}: {m.info['unfinished']} client loops were still"
                " waiting at the end (a lost reply)."
            )
        if m.info.get("mismatches"):
            out.append(f"`{m.scenario}` run {m.run}: {m.info['mismatches']} out-of-order outputs.")
    return out


def markdown_table(table: list[list[str]]) -> str:
    head, *body = table
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for k, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cores"] = str(os.cpu_count())
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory"] = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info["kernel"] = platform.release()
    info["python"] = platform.python_version()
    for dist in (
        "python-socketio",
        "python-engineio",
        "aiohttp",
        "redis",
        "hiredis",
        "msgspec",
        "uvloop",
    ):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    version = _first_line(["redis-server", "--version"])
    info["redis-server"] = next(
        (w[2:] for w in version.split() if w.startswith("v=")), version or "unknown"
    )
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "status", "--porcelain", "--", "gateway", "pairing"])
    info["commit"] = commit + (" (gateway/ or pairing/ modified in the work tree)" if dirty else "")
    return info


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else ""


# -- the documents --------------------------------------------------------------------------


def render_markdown(
    cfg: BenchConfig,
    measurements: list[Measurement],
    machine: dict[str, str],
    started: datetime,
    elapsed_s: float,
    failures: list[str],
) -> str:
    mode = "quick smoke run (`--quick`): not the reference numbers" if cfg.quick else "full run"
    parts = [
        "# Benchmarks",
        "",
        "Regenerated by `make bench-lean` (`python -m bench`); `make bench-lean"
        ' BENCH_LEAN_ARGS="--quick"` is a one-minute smoke run. Do not edit by hand.',
        "",
        f"- **Mode**: {mode}; {cfg.runs} run(s) of every scenario, median with min and max;"
        f" measurement windows of {cfg.duration_s:g} s after {cfg.warmup_s:g} s of warm-up"
        f" (idle: {cfg.idle_window_s:g} s after {cfg.idle_settle_s:g} s; stock fan-out"
        f" comparison: {cfg.fanout_duration_s:g} s).",
        f"- **Taken**: {started:%Y-%m-%d %H:%M} UTC, {elapsed_s / 60:.1f} min.",
        f"- **Placement**: servers under test pinned to CPU {cfg.gateway_cpu} (`taskset -c"
        f" {cfg.gateway_cpu}`; two replicas are two processes sharing that CPU); redis-server"
        f" and the load generator ({cfg.generator_procs} process(es) of the lean client in"
        f" `bench/client.py`) on CPU {cfg.load_cpu}. The gateway runs with production timings"
        " (heartbeat 10/30/60 s, sweep 5 s, ping 25/20 s) and `log_level: warning`.",
        "- **Machine**: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "## Results",
        "",
        "Latencies are measured by the client: from sending the event to receiving its ack"
        " (relay: from `app:command` to the matching `terminal:output`; pair: `app:pair` alone,"
        " and the whole register -> pair -> unpair loop). Throughput counts operations that"
        " completed inside the measurement window; *failures/s* counts error acks inside it"
        " (and, for relay, `terminal:output` not received within 2 s of its `app:command`:"
        " LOST_OUTPUT), see the notes at the end for their codes. These figures are for the"
        " lean client of `bench/client.py` (no permessage-deflate offered, no per-socket"
        " extras); the official socket.io-client's figures, beside another gateway measured in"
        " the same session, are in [benchmarks.md](benchmarks.md) (`make bench`).",
        "",
        markdown_table(main_table(cfg, measurements)),
        "",
        f"Idle: RSS per connection = (gateway VmRSS with {cfg.idle_runners:,} registered"
        f' runners - VmRSS with none) / {cfg.idle_runners:,}, both from /proc; "none" is'
        " read after 20 runners registered, heartbeated and left, so code loaded on first use"
        " is not charged to connections. The runners"
        f" heartbeat every {cfg.idle_interval_s:g} s with random phases; CPU is the gateway's"
        " utime+stime over the window.",
        "",
        "## PairingSessionService against redis-benchmark",
        "",
        f"Each method in a closed loop from {cfg.service_tasks} asyncio tasks (uvloop, the"
        " gateway's client settings) for"
        f" {cfg.service_seconds:g} s, then `redis-benchmark -c {cfg.service_tasks}` sending"
        " the commands the method sent (captured with MONITOR; Lua-internal commands excluded)"
        " with the same keys. Both run pinned to the gateway's CPU while no server runs,"
        " Redis on the other. The ratio is ours / redis-benchmark in the same run: the share"
        " of the Redis limit that the Python client stack reaches at that concurrency. The"
        " removals run last, so after their first call they find nothing to remove, on both"
        " sides.",
        "",
        markdown_table(service_table(measurements)),
        "",
        "## Relay fan-out: per-room channels vs python-socketio's AsyncRedisManager",
        "",
        "docs/architecture.md says `AsyncRedisManager` costs a Redis round trip per message."
        " The first three rows run the relay scenario against `bench/bare_server.py` (stock"
        " python-socketio, no pairing logic, no Redis state) with the default in-process"
        " manager, then with `client_manager=socketio.AsyncRedisManager(url)`, on one process"
        " and on two (app on one, runner on the other, both on the same CPU). The gateway"
        " rows repeat the relay results above (they also do the pairing lookups in Redis).",
        "",
        markdown_table(fanout_table(measurements)),
        "",
        "## Resources during the measurement windows (median of runs)",
        "",
        "CPU is % of one core (utime+stime from /proc/<pid>/stat over the window). The load"
        " generator shares its core with redis-server; it is not the bottleneck while its"
        " share stays well below 100%.",
        "",
        markdown_table(resource_table(measurements)),
        "",
    ]
    extra = notes(measurements) + [f"Failed: {f}" for f in failures]
    if extra:
        parts += ["## Notes", ""] + [f"- {n}" for n in extra] + [""]
    flames = [
        f
        for f in ("flame-heartbeat.svg", "flame-relay.svg", "flame-pair.svg")
        if (ROOT / "docs" / f).exists()
    ]
    if flames:
        parts += [
            "## Profiles",
            "",
            "`make bench BENCH_ARGS=--profile` runs heartbeat, relay and pair once more with"
            " py-spy"
            " (200 Hz, `--nonblocking`) on the gateway and writes flame graphs: "
            + ", ".join(f"[{f}]({f})" for f in flames)
            + ". Those runs are not in the tables (py-spy takes CPU on the generator's core).",
            "",
        ]
    parts += ["![benchmarks](benchmarks-lean.png)", ""]
    return "\n".join(parts)


def render_chart(cfg: BenchConfig, measurements: list[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(
        "pairing gateway benchmarks"
        + (" (quick smoke run)" if cfg.quick else "")
        + f": median of {cfg.runs} run(s), bars min-max",
        fontsize=12,
    )

    def bars(ax: Any, labels: list[str], series: list[tuple[str, list[Summary], str]]) -> None:
        n = len(series)
        width = 0.8 / n
        for k, (name, values, color) in enumerate(series):
            xs = [i + (k - (n - 1) / 2) * width for i in range(len(labels))]
            med = [v.median if v.n else 0 for v in values]
            spread = any(v.n and v.high > v.low for v in values)
            err = [
                [max(0.0, v.median - v.low) if v.n else 0 for v in values],
                [max(0.0, v.high - v.median) if v.n else 0 for v in values],
            ]
            ax.bar(xs, med, width, label=name, color=color, yerr=err if spread else None, capsize=3)
        ax.set_xticks(range(len(labels)), labels, fontsize=9)
        top = max((v.high for _, values, _ in series for v in values if v.n), default=0.0)
        if top > 0:
            ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(axis="y", alpha=0.3)

    def s(scen: str, metric: str) -> Summary:
        return summarize(measurements, scen, metric)

    def ref(value: float | None) -> Summary:
        return Summary(value, value, value, 1) if value is not None else Summary(0, 0, 0, 0)

    ax = axes[0][0]
    bars(
        ax,
        ["heartbeat acks/s", "relay round trips/s", "pairings/s"],
        [
            (
                "gateway",
                [
                    s("heartbeat", "acks_per_s"),
                    s("relay", "round_trips_per_s"),
                    s("pair", "pairings_per_s"),
                ],
                "#3b75af",
            ),
            (
                "bare python-socketio",
                [s("ceiling", "acks_per_s"), s("fanout:local", "round_trips_per_s"), ref(None)],
                "#e0a040",
            ),
        ],
    )
    ax.set_title("throughput (higher is better)", fontsize=10)

    ax = axes[0][1]
    bars(
        ax,
        ["heartbeat ack", "relay round trip", "app:pair"],
        [
            (
                "gateway",
                [s("heartbeat", "p99_ms"), s("relay", "p99_ms"), s("pair", "app_pair_p99_ms")],
                "#3b75af",
            ),
        ],
    )
    ax.set_title("p99 latency, ms (lower is better)", fontsize=10)

    ax = axes[1][0]
    names = [m.scenario for m in measurements if m.scenario.startswith("service:")]
    methods = list(dict.fromkeys(names))
    if methods:
        bars(
            ax,
            [m.split(":", 1)[1] for m in methods],
            [
                ("PairingSessionService", [s(m, "python_ops_per_s") for m in methods], "#3b75af"),
                (
                    "redis-benchmark, same commands",
                    [s(m, "redis_benchmark_ops_per_s") for m in methods],
                    "#999999",
                ),
            ],
        )
        ax.tick_params(axis="x", labelsize=7, labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_title(f"service ops/s, {cfg.service_tasks} concurrent", fontsize=10)

    ax = axes[1][1]
    keys = [k for k, _ in FANOUT_VARIANTS if s(k, "round_trips_per_s").n]
    short = {
        "fanout:local": "stock,\nin-process",
        "fanout:redis": "stock +\nRedisManager",
        "fanout:redis2": "stock +\nRedisManager x2",
        "relay": "gateway",
        "relay2": "gateway x2",
    }
    if keys:
        bars(
            ax,
            [short[k] for k in keys],
            [("round trips/s", [s(k, "round_trips_per_s") for k in keys], "#3b75af")],
        )
        for patch, key in zip(ax.patches, keys, strict=False):
            if key.startswith("fanout:"):
                patch.set_color("#e0a040")
    ax.set_title("relay fan-out paths, round trips/s", fontsize=10)

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_rows(measurements: Iterable[Measurement]) -> list[dict[str, Any]]:
    return [
        {"scenario": m.scenario, "run": m.run, "metrics": m.metrics, "cpu": m.cpu, "info": m.info}
        for m in measurements
    ]
