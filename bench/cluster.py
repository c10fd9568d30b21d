"""``python -m bench.cluster`` (``make bench-cluster``): Redis CPU per heartbeat and per relayed
message on one Redis and on a 3-master Redis Cluster (3 replicas), and its spread over shards.

What it measures is Redis's side only: CPU seconds of each redis-server process
(/proc/<pid>/stat) across a fixed number of operations, divided by that number. The gateway
side is not measured here (both clients pipeline: the single-node link, and one such link per
master on the cluster; see docs/benchmarks.md's main sections for the gateway).

Both stores run the gateway's own services, built as ``gateway.app`` builds them for the
URL (``pairing.keys.layout_for``), so the per-operation command mix is whatever the services
send: one script on one Redis, the single-slot steps on a cluster.

- heartbeat: ``RunnerRegistry.heartbeat`` of a claimed runner. On the cluster it writes the
  sweeper's index shard (another slot) only when the runner's mark has expired, every half
  heartbeat timeout: at the contract's 10 s beats and 30 s timeout every other beat, so half
  the rounds run with the mark fresh (one command) and half with it expired (two).
- relay: ``RelayService.output`` of a runner paired with one app held on another replica:
  the seq, the hold and the publish to the app's room channel (PUBLISH on one Redis,
  SPUBLISH on the shard owning the app's slot in the cluster), read by one subscriber per
  channel as a gateway's listener would. The recipients are known current
  (``members_known``), as a replica's are between its once-a-second reads of the app set.

Every process started here is recorded by pid and stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.sections import write_section
from gateway.fanout import room_for_app
from pairing import PairingSessionService, keys
from pairing.relay import Recipient, RelayService
from pairing.runners import RunnerRegistry
from pairing.store import Redis as StoreRedis
from pairing.store import connect
from pairing.store.cluster import cluster_client
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
#: Seconds of idle measured before each run, to take the servers' background CPU off.
IDLE_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK_BEGIN = "<!-- bench.cluster:begin -->"
MARK_END = "<!-- bench.cluster:end -->"


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


@dataclass
class Result:
    name: str
    ops: int
    #: CPU seconds per server, by role, across the ops.
    cpu: dict[str, float]

    def per_op_us(self, role_prefix: str = "") -> float:
        total = sum(v for k, v in self.cpu.items() if k.startswith(role_prefix))
        return total / self.ops * 1e6


def _cpu(servers: dict[str, RedisProcess]) -> dict[str, float]:
    return {name: cpu_seconds(s.pid) for name, s in servers.items()}


async def _measure(name: str, servers: dict[str, RedisProcess], ops: int, work: Any) -> Result:
    # Idle CPU (serverCron, the cluster bus, replication pings) is measured first and
    # taken off in proportion to the time the work took.
    idle_start, t0 = _cpu(servers), time.monotonic()
    await asyncio.sleep(IDLE_S)
    idle_end, t1 = _cpu(servers), time.monotonic()
    idle_rate = {k: (idle_end[k] - idle_start[k]) / (t1 - t0) for k in servers}
    before, t2 = _cpu(servers), time.monotonic()
    await work()
    await asyncio.sleep(0.3)  # replicas apply the last writes
    after, t3 = _cpu(servers), time.monotonic()
    return Result(
        name,
        ops,
        {k: max(0.0, after[k] - before[k] - idle_rate[k] * (t3 - t2)) for k in servers},
    )


async def _in_batches(calls: list[Any], width: int = 200) -> None:
    for i in range(0, len(calls), width):
        await asyncio.gather(*(c() for c in calls[i : i + width]))


async def _drain(port: int, command: bytes, stop: asyncio.Event) -> None:
    """A subscriber that reads and discards what it is sent, as a gateway's listener would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(command)
    await writer.drain()
    while not stop.is_set():
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.2)
        except TimeoutError:
            continue
        if not data:
            break
    writer.close()


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def _workload(
    client: StoreRedis,
    layout: keys.KeyLayout,
    servers: dict[str, RedisProcess],
    subscribe: Any,
    runners: int,
    rounds: int,
    messages: int,
    rooms: int,
) -> list[Result]:
    """Heartbeats, then relayed output, through the services in ``layout``; ``subscribe``
    starts the listeners of the given channels and returns their tasks."""
    registry = RunnerRegistry(client, layout=layout)
    await registry.load_scripts()
    ids = [f"runner-{i}" for i in range(runners)]
    await _in_batches([lambda r=r: registry.claim(r, "conn") for r in ids])
    if layout.cluster:
        # The cluster heartbeat writes the index shard only when the runner's mark has
        # expired (every half timeout): every other beat at the contract's 10 s beats and
        # 30 s timeout. So half the rounds with the mark fresh, half with it always expired.
        due = RunnerRegistry(client, layout=layout, heartbeat_timeout_s=0.002)
        half = rounds // 2
        marked = [lambda r=r: registry.heartbeat(r, "conn") for _ in range(half) for r in ids]
        unmarked = [lambda r=r: due.heartbeat(r, "conn") for _ in range(rounds - half) for r in ids]
        beats = [
            await _measure("heartbeat", servers, len(marked), lambda: _in_batches(marked)),
            await _measure("heartbeat", servers, len(unmarked), lambda: _in_batches(unmarked)),
        ]
        total = {k: sum(b.cpu[k] for b in beats) for k in servers}
        results = [Result("heartbeat", sum(b.ops for b in beats), total)]
    else:
        calls = [lambda r=r: registry.heartbeat(r, "conn") for _ in range(rounds) for r in ids]
        results = [await _measure("heartbeat", servers, len(calls), lambda: _in_batches(calls))]

    # One runner per room, each paired with one app held on another replica.
    sessions = PairingSessionService(client, layout=layout)
    relay = RelayService(client, layout=layout)
    await relay.load_scripts()
    pairs = [(f"relay-runner-{i}", f"relay-app-{i:04d}-0123456789") for i in range(rooms)]
    for runner, app in pairs:
        await sessions.create_session(app, runner)
    channels = [layout.room_channel(room_for_app(app)) for _, app in pairs]
    stop = asyncio.Event()
    drains = await subscribe(channels, stop)
    await asyncio.sleep(0.3)
    blob = b"x" * 200
    recipients = [
        [Recipient(app, channel, b"emit" + channel.encode() + b"terminal:output")]
        for (_, app), channel in zip(pairs, channels, strict=True)
    ]
    outs = [
        lambda i=i: relay.output(
            pairs[i % rooms][0], None, recipients[i % rooms], blob, members_known=True
        )
        for i in range(messages)
    ]
    results.append(await _measure("relay", servers, len(outs), lambda: _in_batches(outs)))
    stop.set()
    await asyncio.gather(*drains)
    return results


async def run_single(
    runners: int, rounds: int, messages: int, rooms: int, *, pipelined: bool = True
) -> list[Result]:
    """One Redis through the gateway's pipelined link or, to tell batching from sharding
    apart, through redis-py's plain pooled client (one command per write, as the cluster
    client sends them)."""
    server = RedisProcess()
    server.start()
    servers = {"single": server}
    try:
        url = server.url
        client = connect(url) if pipelined else Redis.from_url(url, max_connections=512)

        async def subscribe(channels: list[str], stop: asyncio.Event) -> list[Any]:
            command = _resp("SUBSCRIBE", *channels)
            return [asyncio.create_task(_drain(server.port, command, stop))]

        results = await _workload(
            client, keys.SINGLE_NODE, servers, subscribe, runners, rounds, messages, rooms
        )
        await client.aclose()
        return results
    finally:
        server.close()


async def run_cluster(runners: int, rounds: int, messages: int, rooms: int) -> list[Result]:
    # Redis's default node timeout: the tests' short one could fail over a master that is
    # merely busy under the measured load.
    cluster = RedisClusterProcess(node_timeout_ms=15000)
    await asyncio.to_thread(cluster.start)  # returns once every replica is in sync
    try:
        client = cluster_client(cluster.url, max_connections=512)
        await client.initialize()
        nodes = cluster.nodes
        by_port = {n.port: n for n in nodes}
        primaries = sorted(client.get_primaries(), key=lambda n: n.port)
        servers = {f"master{i}": by_port[int(p.port)] for i, p in enumerate(primaries)}
        replicas = [n for n in nodes if n.port not in {p.port for p in primaries}]
        servers.update({f"replica{i}": n for i, n in enumerate(replicas)})

        async def subscribe(channels: list[str], stop: asyncio.Event) -> list[Any]:
            drains = []
            for primary in primaries:
                mine = [c for c in channels if client.get_node_from_key(c) is primary]
                # One SSUBSCRIBE per slot: a command's channels must share a slot.
                command = b"".join(_resp("SSUBSCRIBE", c) for c in mine)
                if mine:
                    drains.append(asyncio.create_task(_drain(int(primary.port), command, stop)))
            return drains

        results = await _workload(
            client,  # type: ignore[arg-type]
            keys.CLUSTER,
            servers,
            subscribe,
            runners,
            rounds,
            messages,
            rooms,
        )
        # Where the keys sit: the runners' and apps' keys over the masters.
        spread = {}
        for i, primary in enumerate(primaries):
            spread[f"master{i}"] = int(await client.dbsize(target_nodes=primary))
        results.append(Result("keys", runners, {k: float(v) for k, v in spread.items()}))
        await client.aclose()
        return results
    finally:
        cluster.close()


_LABELS = {"heartbeat": "heartbeat", "relay": "relay (runner:output to one app elsewhere)"}


def render(
    single: list[Result], plain: list[Result], cluster: list[Result], args: argparse.Namespace
) -> str:
    s = {r.name: r for r in single}
    p = {r.name: r for r in plain}
    c = {r.name: r for r in cluster}
    lines = [
        MARK_BEGIN,
        "## Redis Cluster: Redis CPU per operation, one Redis beside 3 masters",
        "",
        f"`make bench-cluster` ({args.runs} runs of each store, taking turns, each server's "
        f"median CPU; {args.runners} runners x {args.rounds} heartbeats; "
        f"{args.messages} runner:output relays of 200 bytes, {args.rooms} runners each paired "
        "with one app held on another replica, one subscriber per app channel; the gateway's "
        "own services in the store's key layout; CPU of each redis-server from /proc, per "
        "operation). The cluster "
        "has 3 masters and 3 replicas; the replicas' CPU is shown apart. Each server's idle "
        "CPU (measured for 2 s before each run) is taken off.",
        "",
        '"One Redis" is the gateway\'s pipelined link (many commands per write), and the '
        'cluster has one such link per master; "one Redis, unbatched" is redis-py\'s pooled '
        "client, one command per write (how redis-py's own cluster client would send them): "
        "the difference between those two columns is batching.",
        "",
        "| operation | one Redis µs/op | one Redis, unbatched µs/op | cluster masters µs/op "
        "(sum) | per master µs/op | replicas µs/op (sum) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name in ("heartbeat", "relay"):
        masters = sorted(k for k in c[name].cpu if k.startswith("master"))
        per = " / ".join(f"{c[name].cpu[m] / c[name].ops * 1e6:.1f}" for m in masters)
        lines.append(
            f"| {_LABELS[name]} | {s[name].per_op_us():.1f} | {p[name].per_op_us():.1f} | "
            f"{c[name].per_op_us('master'):.1f} | "
            f"{per} | {c[name].per_op_us('replica'):.1f} |"
        )
    keys_row = c["keys"].cpu
    lines += [
        "",
        "Keys per master after the run: "
        + ", ".join(f"{k} {int(v)}" for k, v in sorted(keys_row.items()))
        + ".",
        "",
        MARK_END,
        "",
    ]
    return "\n".join(lines)


def median_results(runs: list[list[Result]]) -> list[Result]:
    """Per operation, each server's median CPU over the runs (the ops are the same in each)."""
    out = []
    for results in zip(*runs, strict=True):
        first = results[0]
        cpu = {k: statistics.median(r.cpu[k] for r in results) for k in first.cpu}
        out.append(Result(first.name, first.ops, cpu))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--runners", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="runs of each store, alternating")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write docs")
    args = parser.parse_args(argv)
    shape = (args.runners, args.rounds, args.messages, args.rooms)
    stores = {
        "single": lambda: run_single(*shape),
        "plain": lambda: run_single(*shape, pipelined=False),
        "cluster": lambda: run_cluster(*shape),
    }
    runs: dict[str, list[list[Result]]] = {name: [] for name in stores}
    for run in range(args.runs):
        # The stores take turns, in a different order each run: a machine that slows down
        # or speeds up meanwhile does not favour one of them.
        order = list(stores)[run % 3 :] + list(stores)[: run % 3]
        for name in order:
            runs[name].append(asyncio.run(stores[name]()))
    single, plain, cluster = (median_results(runs[name]) for name in stores)
    text = render(single, plain, cluster, args)
    print(text)
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", text, MARK_BEGIN, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
