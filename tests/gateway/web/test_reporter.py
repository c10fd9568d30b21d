"""ReplicaReporter: the report, and the replica's runner hash written by difference."""

from __future__ import annotations

from gateway.web.reporter import ReplicaReporter
from pairing import keys
from pairing.overview import OperatorOverview
from pairing.store import Redis


async def test_runner_hash_follows_by_difference(store: Redis) -> None:
    overview = OperatorOverview(store)
    local: tuple[int, list[str]] = (2, ["a", "b"])
    reporter = ReplicaReporter(
        overview,
        store,
        replica_id="r1",
        interval_s=5,
        local=lambda: local,
        fanout_healthy=lambda: True,
        store_timeout_s=5,
    )
    key = keys.replica_runners("r1")
    await reporter.report_once()
    first = {k.decode(): int(v) for k, v in (await store.hgetall(key)).items()}
    assert set(first) == {"a", "b"}
    assert 0 < await store.pttl(key) <= 30_000

    local = (1, ["b", "c"])
    await reporter.report_once()
    second = {k.decode(): int(v) for k, v in (await store.hgetall(key)).items()}
    assert set(second) == {"b", "c"}
    assert second["b"] == first["b"]  # since when it is here: unchanged

    await store.delete(key)  # expired (the replica missed its reports for a while)
    await reporter.report_once()  # finds it gone: nothing came or went, so...
    await reporter.report_once()  # ...the next report writes every runner again
    third = {k.decode(): int(v) for k, v in (await store.hgetall(key)).items()}
    assert third == second

    [report] = await overview.replica_reports()
    assert (report.replica_id, report.apps, report.runners, report.store) == ("r1", 1, 2, True)
