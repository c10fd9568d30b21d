"""bench/cluster_official.py: its table from rows (the runs themselves need the load kit and
take minutes: ``make bench-cluster``), and the INFO counters it reads from a real server."""

from __future__ import annotations

import argparse
from typing import Any

import redis

from bench import cluster_official
from tests.support.redis_server import RedisProcess


def _row(scenario: str, store: str, run: int, us: float, reads: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "store": store,
        "run": run,
        "ops": 1000,
        "ops_per_s": 100.0,
        "errors": 0,
        "redis_us_per_op": us,
        "replicas_us_per_op": 1.0,
        "per_master_us": [us / 3] * 3 if store == "cluster" else None,
        "commands_per_op": 6.0,
        "reads_per_op": reads,
    }


def test_the_table_shows_the_ratio_of_medians_and_run_by_run() -> None:
    rows = []
    for scenario in ("heartbeat", "relay"):
        for run, (single, cluster) in enumerate([(10.0, 12.0), (20.0, 30.0), (10.0, 11.0)]):
            rows.append(_row(scenario, "single", run, single, 0.1))
            rows.append(_row(scenario, "cluster", run, cluster, 0.3))
    args = argparse.Namespace(runs=3, seconds=10, warmup=2, heartbeat_clients=200, relay_pairs=100)
    text = cluster_official.render(rows, [], None, args, "0.1 0.1 0.1", "1.0 1.0 1.0")
    # medians: 10 and 12 -> 1.20x; run by run: 1.20x, 1.50x, 1.10x
    assert "| relay, 100 pairs | 10.0 | 12.0 | 1.20x |" in text
    assert "| relay, 100 pairs | 1.20x, 1.50x, 1.10x | 6.00 / 6.00 | 0.100 / 0.300 |" in text


def test_io_counters_tell_batched_commands_from_single_ones() -> None:
    server = RedisProcess()
    server.start()

    def counted(batched: bool) -> tuple[int, int]:
        before = cluster_official._io_stats({"s": server.port})["s"]
        with redis.Redis(port=server.port) as client:
            if batched:
                pipe = client.pipeline(transaction=False)
                for i in range(20):
                    pipe.set(f"k{i}", i)
                pipe.execute()  # 20 commands in one write
            else:
                for i in range(20):
                    client.set(f"k{i}", i)
        after = cluster_official._io_stats({"s": server.port})["s"]
        return after[0] - before[0], after[1] - before[1]

    try:
        batched, single = counted(True), counted(False)
    finally:
        server.close()
    # The same commands (and the connections' own handshakes and INFOs) either way...
    assert batched[0] == single[0] >= 20
    # ...in 19 fewer reads when they came in one write.
    assert single[1] - batched[1] == 19
