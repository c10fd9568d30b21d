"""``python -m bench.cluster_official`` (part of ``make bench-cluster``): one Redis beside a
3-master Redis Cluster under the official socket.io-client, in one run.

What it measures, with the load kit's ``load.js`` (``--kit``, env ``BENCH_KIT``; the official
socket.io-client 4.8, websocket transport) as the load:

- Redis CPU per heartbeat (200 runners, closed loop) and per relay round trip (100 app/runner
  pairs: app:command -> terminal:input -> runner:output -> terminal:output), on one
  redis-server and summed over the cluster's 3 masters (their replicas apart), the two stores
  alternating run by run; the gateway on CPU 0, the load and every redis-server on CPU 1;
  the registration limit lifted (every load client connects from 127.0.0.1). Error acks are
  counted: a healthy store should answer none. Beside the CPU, what the masters processed per
  operation (INFO stats over the same window): commands (a script's own included) and reads,
  i.e. client writes, which show how well the commands were batched.
- Throughput of 1, 2 and 3 gateway replicas on the 3 masters (each replica with its own load
  process of 200 heartbeating runners; all replicas on CPU 0, so on a 2-core machine this
  shows what the cluster costs per replica, not more cores).
- One replica holding 20,000 idle official-client connections, each heartbeating every 10 s
  (``bench/idle_heartbeat.js``): its RSS and CPU.

Redis CPU comes from /proc/<pid>/stat over the load's measured window (which starts
``--warmup`` seconds after the load reports its clients ready), with each server's idle CPU
(measured for 2 s before the run) taken off. Every process is started and stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from bench.cluster import cpu_seconds
from bench.official import kit_path
from bench.sections import write_section
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs"
MARK_BEGIN = "<!-- bench.cluster-official:begin -->"
MARK_END = "<!-- bench.cluster-official:end -->"
IDLE_S = 2.0
GATEWAY_CPU = 0
LOAD_CPU = 1
#: Production settings (the contract's defaults) with quiet logs; the load registers
#: thousands of runners from one address, so the registration limit is lifted.
GATEWAY_CONFIG: dict[str, Any] = {
    "host": "127.0.0.1",
    "heartbeat": {"interval_s": 10, "timeout_s": 30, "ttl_s": 60},
    "sweep_interval_s": 5,
    "rate_limit": {"pair_failures": 5, "window_s": 60, "registrations": 1_000_000_000},
    "log_format": "json",
    "log_level": "warning",
}


@dataclass
class Managed:
    """A process this benchmark started, pinned to a CPU, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Everything started here, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.running: list[Managed] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cpu: int,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> Managed:
        log_path = LOGS / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        managed = Managed(name, proc, log_path)
        self.running.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 5.0) -> None:
        proc = managed.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        if managed in self.running:
            self.running.remove(managed)

    def stop_all(self) -> None:
        for managed in list(self.running):
            self.stop(managed)


@dataclass
class Gateway:
    managed: Managed
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.managed.pid


def start_gateway(
    procs: Procs, name: str, redis_url: str, overrides: dict[str, Any] | None = None
) -> Gateway:
    port = free_port()
    cfg = {**GATEWAY_CONFIG, **(overrides or {}), "redis_url": redis_url, "port": port}
    cfg_path = LOGS / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    managed = procs.spawn(
        name, [sys.executable, "-m", "gateway", "--config", str(cfg_path)], cpu=GATEWAY_CPU
    )
    deadline = time.monotonic() + 60
    while True:
        if not managed.alive():
            raise RuntimeError(f"{name} exited early:\n{managed.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return Gateway(managed, port)
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready:\n{managed.log_tail()}")
        time.sleep(0.1)


@dataclass
class Stores:
    """One redis-server and a 3-master cluster with 3 replicas (the tests' launchers), every
    node pinned to the load's CPU."""

    single: RedisProcess
    #: One Redis has a replica too, as a deployment with Sentinel does: both stores pay for
    #: replication alike (a master feeds its replica every write).
    single_replica: RedisProcess
    cluster: RedisClusterProcess
    masters: list[RedisProcess]
    replicas: list[RedisProcess]

    @property
    def single_url(self) -> str:
        return self.single.url

    @property
    def cluster_url(self) -> str:
        return self.cluster.url

    def flush(self) -> None:
        for node in (self.single, *self.masters):
            with redis.Redis(port=node.port, socket_timeout=10) as c:
                c.flushall()

    def close(self) -> None:
        self.single_replica.close()
        self.single.close()
        self.cluster.close()


def start_stores() -> Stores:
    single = RedisProcess()
    single.start()
    replica = RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(single.port)))
    replica.start()
    cluster = RedisClusterProcess(node_timeout_ms=15_000)  # (the server's default)
    try:
        cluster.start()
        deadline = time.monotonic() + 30
        while redis.Redis(port=replica.port).info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the one Redis's replica did not sync")
            time.sleep(0.1)
    except BaseException:
        replica.close()
        single.close()
        cluster.close()
        raise
    for node in (single, replica, *cluster.nodes):
        os.sched_setaffinity(node.pid, {LOAD_CPU})
    masters = cluster.master_nodes()
    replicas = [n for n in cluster.nodes if n not in masters]
    return Stores(single, replica, cluster, masters, replicas)


@dataclass
class Load:
    """One load.js run against one gateway, with the Redis CPU of its measured window."""

    result: dict[str, Any]
    redis_cpu_s: dict[str, float] = field(default_factory=dict)
    #: Per master: (commands, reads) it processed in the window (INFO stats): how many
    #: commands one read from the gateway carried, i.e. how well they were batched.
    redis_io: dict[str, tuple[int, int]] = field(default_factory=dict)


def run_load(
    procs: Procs,
    kit: Path,
    name: str,
    url: str,
    scenario: str,
    *,
    clients: int,
    seconds: int,
    warmup: int,
    server_pid: int,
    redis: dict[str, int],
    ports: dict[str, int] | None = None,
) -> Load:
    """Run load.js; sample each redis pid's CPU at the start and end of its measured window
    (``warmup`` s after it reports its clients ready), minus the idle rate before."""
    idle0 = {k: cpu_seconds(p) for k, p in redis.items()}
    time.sleep(IDLE_S)
    idle1 = {k: cpu_seconds(p) for k, p in redis.items()}
    idle_rate = {k: (idle1[k] - idle0[k]) / IDLE_S for k in redis}
    argv = [
        "node",
        str(kit / "bench" / "load.js"),
        *("--url", url, "--scenario", scenario, "--clients", str(clients)),
        *("--seconds", str(seconds), "--warmup", str(warmup), "--server-pid", str(server_pid)),
        *("--tag", name),
    ]
    managed = procs.spawn(name, argv, cpu=LOAD_CPU, pipes=True)
    window: dict[str, Any] = {}

    def watch() -> None:
        assert managed.proc.stdout is not None
        # load.js logs "<n> runners registered" / "<n> pairs paired" once set up (stderr goes
        # to the log file); poll the log for it.
        assert managed.log_path is not None
        while managed.alive():
            text = managed.log_path.read_text(errors="replace")
            if " registered" in text or " paired" in text:
                break
            time.sleep(0.02)
        else:
            return
        ready = time.monotonic()
        time.sleep(max(0.0, ready + warmup - time.monotonic()))
        window["t0"], window["c0"] = time.monotonic(), {k: cpu_seconds(p) for k, p in redis.items()}
        window["s0"] = _io_stats(ports or {})
        time.sleep(max(0.0, window["t0"] + seconds - time.monotonic()))
        window["t1"], window["c1"] = time.monotonic(), {k: cpu_seconds(p) for k, p in redis.items()}
        window["s1"] = _io_stats(ports or {})

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = managed.proc.communicate(timeout=seconds + warmup + 300)
    watcher.join(timeout=30)
    procs.running.remove(managed)
    line = out.decode(errors="replace").strip().splitlines()[-1] if out.strip() else "{}"
    result = json.loads(line)
    if "c1" not in window:
        raise RuntimeError(f"{name}: no measured window ({result})\n{managed.log_tail()}")
    wall = window["t1"] - window["t0"]
    cpu = {k: max(0.0, window["c1"][k] - window["c0"][k] - idle_rate[k] * wall) for k in redis}
    io = {
        k: (window["s1"][k][0] - window["s0"][k][0], window["s1"][k][1] - window["s0"][k][1])
        for k in window["s1"]
    }
    return Load(result, cpu, io)


def _io_stats(ports: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Commands and reads each server has processed so far (INFO stats)."""
    out = {}
    for name, port in ports.items():
        with redis.Redis(port=port, socket_timeout=5) as c:
            stats = c.info("stats")
        out[name] = (int(stats["total_commands_processed"]), int(stats["total_reads_processed"]))
    return out


def _gateway(procs: Procs, name: str, url: str) -> Gateway:
    return start_gateway(procs, name, url)


def _stop(procs: Procs, managed: Managed) -> None:
    procs.stop(managed)
    if managed in procs.running:
        procs.running.remove(managed)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def side_by_side(
    procs: Procs, kit: Path, stores: Stores, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    clients = {"heartbeat": args.heartbeat_clients, "relay": args.relay_pairs}
    for scenario in ("heartbeat", "relay"):
        for run in range(args.runs):
            order = ("single", "cluster") if run % 2 == 0 else ("cluster", "single")
            for store in order:
                stores.flush()
                url = stores.single_url if store == "single" else stores.cluster_url
                redis = (
                    {"single": stores.single.pid, "replica0": stores.single_replica.pid}
                    if store == "single"
                    else {
                        **{f"master{i}": n.pid for i, n in enumerate(stores.masters)},
                        **{f"replica{i}": n.pid for i, n in enumerate(stores.replicas)},
                    }
                )
                ports = (
                    {"single": stores.single.port}
                    if store == "single"
                    else {f"master{i}": n.port for i, n in enumerate(stores.masters)}
                )
                gw = _gateway(procs, f"gw-{scenario}-{store}-{run}", url)
                load_avg = _loadavg()
                try:
                    load = run_load(
                        procs,
                        kit,
                        f"load-{scenario}-{store}-{run}",
                        gw.url,
                        scenario,
                        clients=clients[scenario],
                        seconds=args.seconds,
                        warmup=args.warmup,
                        server_pid=gw.pid,
                        redis=redis,
                        ports=ports,
                    )
                finally:
                    _stop(procs, gw.managed)
                res = load.result
                ops = int(res.get("ops") or 0)
                masters = sum(v for k, v in load.redis_cpu_s.items() if not k.startswith("replica"))
                replicas = sum(v for k, v in load.redis_cpu_s.items() if k.startswith("replica"))
                row = {
                    "scenario": scenario,
                    "store": store,
                    "run": run,
                    "ops": ops,
                    "ops_per_s": res.get("ops_per_s"),
                    "errors": res.get("errors", 0),
                    "error_kinds": res.get("error_kinds") or res.get("errorKinds"),
                    "p50_ms": res.get("p50_ms"),
                    "p99_ms": res.get("p99_ms"),
                    "server_cpu_pct": res.get("server_cpu_pct"),
                    "other_cpu_pct": res.get("other_cpu_pct"),
                    "redis_us_per_op": masters / ops * 1e6 if ops else None,
                    "replicas_us_per_op": replicas / ops * 1e6 if ops else None,
                    "per_master_us": [
                        load.redis_cpu_s[f"master{i}"] / ops * 1e6 if ops else None
                        for i in range(len(stores.masters))
                    ]
                    if store == "cluster"
                    else None,
                    # (commands counted by INFO include those a script runs)
                    "commands_per_op": sum(c for c, _ in load.redis_io.values()) / ops
                    if ops
                    else None,
                    "reads_per_op": (
                        sum(r for _, r in load.redis_io.values()) / ops if ops else None
                    ),
                    "loadavg": load_avg,
                }
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    return rows


def replicas_scaling(
    procs: Procs, kit: Path, stores: Stores, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    masters_pids = {f"master{i}": n.pid for i, n in enumerate(stores.masters)}
    for count in (1, 2, 3):
        stores.flush()
        gws = [_gateway(procs, f"gw-scale{count}-{i}", stores.cluster_url) for i in range(count)]
        load_avg = _loadavg()
        results: list[Load | None] = [None] * count

        def one(i: int, gw: Any, count: int = count, results: list[Load | None] = results) -> None:
            results[i] = run_load(
                procs,
                kit,
                f"load-scale{count}-{i}",
                gw.url,
                "heartbeat",
                clients=args.heartbeat_clients,
                seconds=args.seconds,
                warmup=args.warmup,
                server_pid=gw.pid,
                redis=masters_pids,
            )

        try:
            threads = [threading.Thread(target=one, args=(i, gw)) for i, gw in enumerate(gws)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for gw in gws:
                _stop(procs, gw.managed)
        done = [r for r in results if r is not None]
        ops = sum(int(r.result.get("ops") or 0) for r in done)
        masters_cpu = max(sum(r.redis_cpu_s.values()) for r in done) if done else 0.0
        row = {
            "replicas": count,
            "heartbeats_per_s": sum(float(r.result.get("ops_per_s") or 0) for r in done),
            "errors": sum(int(r.result.get("errors") or 0) for r in done),
            "p99_ms": max(float(r.result.get("p99_ms") or 0) for r in done) if done else None,
            # (each load's window is the same length and nearly the same time: the masters'
            # CPU over one window, divided by every load's ops in it)
            "redis_us_per_op": masters_cpu / ops * 1e6 if ops else None,
            "loadavg": load_avg,
        }
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def idle_connections(
    procs: Procs, kit: Path, stores: Stores, args: argparse.Namespace
) -> dict[str, Any]:
    stores.flush()
    gw = start_gateway(procs, "gw-idle", stores.cluster_url)
    load_avg = _loadavg()
    try:
        argv = [
            "node",
            str(ROOT / "bench" / "idle_heartbeat.js"),
            *("--url", gw.url, "--clients", str(args.idle_clients), "--every", "10"),
            *("--hold", str(args.idle_hold), "--server-pid", str(gw.pid)),
        ]
        env = {"NODE_PATH": str(kit / "bench" / "node_modules")}
        managed = procs.spawn("load-idle", argv, cpu=LOAD_CPU, pipes=True, env=env)
        out, _ = managed.proc.communicate(timeout=args.idle_hold + 900)
        procs.running.remove(managed)
    finally:
        _stop(procs, gw.managed)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["loadavg"] = load_avg
    print(json.dumps(result), file=sys.stderr)
    return result


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _f(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def render(
    rows: list[dict[str, Any]],
    scaling: list[dict[str, Any]],
    idle: dict[str, Any] | None,
    args: argparse.Namespace,
    started_load: str,
    ended_load: str,
) -> str:
    def pick(scenario: str, store: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["scenario"] == scenario and r["store"] == store]

    lines = [
        MARK_BEGIN,
        "## Redis Cluster under the official client: one Redis beside 3 masters",
        "",
        f"`make bench-cluster` (`bench/cluster_official.py`): the official socket.io-client "
        f"4.8 (the load kit's `load.js`, websocket) drives one gateway process (CPU 0) on one "
        f"redis-server with a replica (as with Sentinel) and on a 3-master cluster with 3 "
        f"replicas (every redis-server and the load on CPU 1), the two alternating run by run; "
        f"{args.runs} runs each of "
        f"{args.seconds} s after {args.warmup} s of warm-up; medians. Redis CPU is each "
        "redis-server's /proc CPU over the measured window, idle CPU taken off, divided by "
        "the acks (heartbeat) or round trips (relay: app:command -> terminal:input -> "
        "runner:output -> terminal:output) in it. The registration limit is lifted for the "
        f"load. Machine load average (1, 5, 15 min) at the start: {started_load}; at the end: "
        f"{ended_load} (a 2-core machine shared with other work: take the ratios, measured in "
        "one run, rather than the absolute figures).",
        "",
        "| scenario | one Redis: Redis µs/op | 3 masters: Redis µs/op (sum) | ratio | per master "
        "µs/op | replicas µs/op (one Redis's / the cluster's, sum) | one Redis ops/s | 3 "
        "masters ops/s | error acks (one Redis / 3 masters) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    labels = {
        "heartbeat": f"heartbeat, {args.heartbeat_clients} runners",
        "relay": f"relay, {args.relay_pairs} pairs",
    }
    for scenario in ("heartbeat", "relay"):
        single, cluster = pick(scenario, "single"), pick(scenario, "cluster")
        s_us = _median([r["redis_us_per_op"] for r in single])
        c_us = _median([r["redis_us_per_op"] for r in cluster])
        per_master = [
            _median([r["per_master_us"][i] for r in cluster if r["per_master_us"]])
            for i in range(3)
        ]
        lines.append(
            f"| {labels[scenario]} | {_f(s_us)} | {_f(c_us)} | "
            f"{_f(c_us / s_us if c_us and s_us else None, 2)}x | "
            f"{' / '.join(_f(v) for v in per_master)} | "
            f"{_f(_median([r['replicas_us_per_op'] for r in single]))} / "
            f"{_f(_median([r['replicas_us_per_op'] for r in cluster]))} | "
            f"{_f(_median([r['ops_per_s'] for r in single]), 0)} | "
            f"{_f(_median([r['ops_per_s'] for r in cluster]), 0)} | "
            f"{sum(int(r['errors'] or 0) for r in single)} / "
            f"{sum(int(r['errors'] or 0) for r in cluster)} |"
        )
    lines += [
        "",
        "Run by run (each cluster run beside the one-Redis run next to it), and what the "
        "servers processed per operation (INFO stats: commands, those a script runs included; "
        "reads, i.e. writes from the clients, which is how well the commands were batched):",
        "",
        "| scenario | ratio, run by run | commands/op (one Redis / 3 masters) | reads/op (one "
        "Redis / 3 masters) |",
        "|---|---|---|---|",
    ]
    for scenario in ("heartbeat", "relay"):
        single, cluster = pick(scenario, "single"), pick(scenario, "cluster")
        pairs = [
            f"{c['redis_us_per_op'] / s['redis_us_per_op']:.2f}x"
            for s, c in zip(single, cluster, strict=False)
            if c["redis_us_per_op"] and s["redis_us_per_op"]
        ]
        lines.append(
            f"| {labels[scenario]} | {', '.join(pairs)} | "
            f"{_f(_median([r.get('commands_per_op') for r in single]), 2)} / "
            f"{_f(_median([r.get('commands_per_op') for r in cluster]), 2)} | "
            f"{_f(_median([r.get('reads_per_op') for r in single]), 3)} / "
            f"{_f(_median([r.get('reads_per_op') for r in cluster]), 3)} |"
        )
    if scaling:
        lines += [
            "",
            f"Gateway replicas on the 3 masters, each driven by its own load of "
            f"{args.heartbeat_clients} heartbeating runners (all replicas share CPU 0, the "
            "loads and Redis CPU 1: on this 2-core machine more replicas share the same "
            "core, so the total shows what a replica costs, not what more cores would add):",
            "",
            "| gateway replicas | heartbeats/s (total) | p99 ms (worst) | Redis µs per "
            "heartbeat (3 masters) | error acks |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in scaling:
            lines.append(
                f"| {r['replicas']} | {_f(r['heartbeats_per_s'], 0)} | {_f(r['p99_ms'])} | "
                f"{_f(r['redis_us_per_op'])} | {r['errors']} |"
            )
    if idle:
        rss_conn = (
            (idle["rss_end_kib"] - idle["rss_before_kib"]) / idle["connected"]
            if idle.get("connected") and idle.get("rss_end_kib") and idle.get("rss_before_kib")
            else None
        )
        lines += [
            "",
            f"One gateway replica on the 3 masters holding {idle.get('connected')} idle "
            f"official-client connections (of {idle.get('clients')}), each a runner "
            f"heartbeating every {idle.get('every_s')} s, measured over {idle.get('hold_s')} s "
            f"after one full heartbeat period: RSS {_f((idle.get('rss_end_kib') or 0) / 1024, 0)} "
            f"MiB ({_f((idle.get('rss_before_kib') or 0) / 1024, 0)} MiB before the "
            f"connections, {_f(rss_conn)} KiB per connection), gateway CPU "
            f"{_f(idle.get('server_cpu_pct'))} % of one core for "
            f"{_f(idle.get('heartbeats_per_s'), 0)} heartbeats/s, with "
            f"{idle.get('hold_errors')} error acks. Connecting and registering them took "
            f"{idle.get('setup_s')} s with the gateway's core saturated, meanwhile: "
            f"{_kinds(idle.get('error_kinds') or {})} (the UNAVAILABLE acks are the "
            "gateway's own `store_timeout_s` deadline, events queued behind the handshakes; a "
            "runner whose registration failed was disconnected). Load average at the start: "
            f"{idle.get('loadavg')}.",
        ]
    lines += ["", MARK_END, ""]
    return "\n".join(lines)


def _kinds(kinds: dict[str, int]) -> str:
    """``{"runner:heartbeat:UNAVAILABLE": 3, ...}`` as "3 x `runner:heartbeat:UNAVAILABLE`"."""
    if not kinds:
        return "no errors"
    parts = sorted(kinds.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} x `{k}`" for k, n in parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_official", description=__doc__)
    p.add_argument("--kit", default=os.environ.get("BENCH_KIT", ""), help="load-generator kit")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--heartbeat-clients", type=int, default=200)
    p.add_argument("--relay-pairs", type=int, default=100)
    p.add_argument("--idle-clients", type=int, default=20000)
    p.add_argument("--idle-hold", type=int, default=30)
    p.add_argument("--skip", default="", help="comma list of: sides,scaling,idle")
    p.add_argument("--out", default="", help="also write the raw rows (JSON) here")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    kit = kit_path(args.kit)
    if not (kit / "bench" / "node_modules" / "socket.io-client").is_dir():
        print(f"{kit}: no bench/node_modules/socket.io-client (install the kit)", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    with contextlib.suppress(ValueError, OSError):  # (root may raise the hard limit too)
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    procs = Procs()
    started_load = _loadavg()
    stores: Stores | None = None
    try:
        stores = start_stores()
        rows = side_by_side(procs, kit, stores, args) if "sides" not in skip else []
        scaling = replicas_scaling(procs, kit, stores, args) if "scaling" not in skip else []
        idle = idle_connections(procs, kit, stores, args) if "idle" not in skip else None
    finally:
        procs.stop_all()
        if stores is not None:
            stores.close()
    text = render(rows, scaling, idle, args, started_load, _loadavg())
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "scaling": scaling, "idle": idle}))
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", text, MARK_BEGIN, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
