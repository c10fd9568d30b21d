"""bench/cluster.py: a tiny run on its own servers, and its section of docs/benchmarks.md."""

from __future__ import annotations

import argparse

import pytest

from bench import cluster


async def test_a_tiny_run_measures_both_stores_and_spreads_keys_over_the_masters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster, "IDLE_S", 0.2)
    single = await cluster.run_single(runners=50, rounds=2, messages=200, rooms=10)
    plain = await cluster.run_single(runners=50, rounds=2, messages=200, rooms=10, pipelined=False)
    assert [r.ops for r in plain] == [r.ops for r in single]
    sharded = await cluster.run_cluster(runners=50, rounds=2, messages=200, rooms=10)
    assert [r.name for r in single] == ["heartbeat", "relay"]
    assert [r.name for r in sharded] == ["heartbeat", "relay", "keys"]
    assert single[0].ops == sharded[0].ops == 100
    assert set(sharded[0].cpu) == {f"master{i}" for i in range(3)} | {
        f"replica{i}" for i in range(3)
    }
    per_master = sharded[2].cpu
    assert len(per_master) == 3 and all(count > 0 for count in per_master.values())
    # At least two keys per heartbeating runner (owner, heartbeat), spread over the masters.
    assert sum(per_master.values()) > 100

    args = argparse.Namespace(runs=1, runners=50, rounds=2, messages=200, rooms=10)
    text = cluster.render(single, plain, sharded, args)
    assert text.startswith(cluster.MARK_BEGIN) and cluster.MARK_END in text
    assert "| heartbeat |" in text and "| relay (runner:output to one app elsewhere) |" in text


def test_medians_are_taken_server_by_server_over_the_runs() -> None:
    def run(cpu0: float, cpu1: float) -> list[cluster.Result]:
        return [cluster.Result("relay", 100, {"master0": cpu0, "master1": cpu1})]

    (median,) = cluster.median_results([run(1.0, 9.0), run(3.0, 2.0), run(2.0, 4.0)])
    assert median.name == "relay" and median.ops == 100
    assert median.cpu == {"master0": 2.0, "master1": 4.0}
