"""OperatorOverview: what the console reads from the store, on a real Redis and memory://."""

from __future__ import annotations

import time

from pairing import PairingSessionService, RunnerRegistry, keys
from pairing.overview import OperatorOverview, ReplicaReport
from pairing.store import Redis, connect
from tests.support.redis_cluster import RedisClusterProcess


def now_ms() -> int:
    return int(time.time() * 1000)


def report(replica: str, *, at: int) -> ReplicaReport:
    return ReplicaReport(
        replica_id=replica,
        started_at=at - 1000,
        reported_at=at,
        apps=1,
        runners=1,
        store=True,
        fanout=True,
    )


async def test_online_runners_with_replica_apps_and_since(store: Redis) -> None:
    runners = RunnerRegistry(store, heartbeat_timeout_s=30)
    sessions = PairingSessionService(store, heartbeat_timeout_s=30)
    overview = OperatorOverview(store, heartbeat_timeout_s=30)
    await runners.claim("laptop-1", "replica-a/sid1")
    await runners.claim("laptop-2", "replica-b/sid2")
    await runners.claim("gone", "replica-a/sid3")
    # "gone" last beat 31 s ago: offline, not listed, not counted
    await store.zadd(keys.RUNNER_LAST_SEEN, {"gone": now_ms() - 31_000})
    await sessions.create_session("app-one-0123456789", "laptop-1")
    await sessions.create_session("app-two-0123456789", "laptop-1")
    await overview.report_runners("replica-a", came={"laptop-1": 1234}, went=[], ttl_ms=60_000)
    # a stale entry of another replica for laptop-2 is not taken for replica-b's
    await overview.report_runners("replica-a", came={"laptop-2": 99}, went=[], ttl_ms=60_000)

    total, listed = await overview.online_runners()
    assert total == 2
    by_id = {r.runner_id: r for r in listed}
    assert set(by_id) == {"laptop-1", "laptop-2"}
    assert by_id["laptop-1"].replica == "replica-a"
    assert by_id["laptop-1"].apps == ["app-one-0123456789", "app-two-0123456789"]
    assert by_id["laptop-1"].since == 1234
    assert by_id["laptop-2"].replica == "replica-b"
    assert by_id["laptop-2"].apps == [] and by_id["laptop-2"].since is None

    pairs = await overview.pairings(listed)
    assert sorted((p.app_session_id, p.runner_id) for p in pairs) == [
        ("app-one-0123456789", "laptop-1"),
        ("app-two-0123456789", "laptop-1"),
    ]
    assert all(p.paired_at is not None and abs(p.paired_at - now_ms()) < 60_000 for p in pairs)


async def test_limit_keeps_the_most_recent_beats(store: Redis) -> None:
    overview = OperatorOverview(store, heartbeat_timeout_s=30)
    at = now_ms()
    await store.zadd(keys.RUNNER_LAST_SEEN, {f"r{i}": at - i * 100 for i in range(5)})
    total, listed = await overview.online_runners(limit=2)
    assert total == 5
    assert [r.runner_id for r in listed] == ["r0", "r1"]
    assert all(r.replica is None for r in listed)  # no owner key


async def test_replica_reports_drop_the_long_silent(store: Redis) -> None:
    overview = OperatorOverview(store, forget_after_s=60)
    at = now_ms()
    await overview.report(report("new", at=at))
    await overview.report(report("old", at=at - 61_000))
    await store.hset(keys.REPLICAS, "junk", b"not json")
    reports = await overview.replica_reports()
    assert [r.replica_id for r in reports] == ["new"]
    assert set(await store.hkeys(keys.REPLICAS)) == {b"new"}


async def test_online_runners_on_a_cluster(redis_cluster: RedisClusterProcess) -> None:
    """The index is sharded there: runners on several shards are all found, with their owner,
    apps and pairing time read from their own slots."""
    store = connect(redis_cluster.url)
    layout = keys.CLUSTER
    runners = RunnerRegistry(store, heartbeat_timeout_s=30, layout=layout)
    sessions = PairingSessionService(store, heartbeat_timeout_s=30, layout=layout)
    overview = OperatorOverview(store, heartbeat_timeout_s=30, layout=layout)
    ids = [f"cluster-runner-{i}" for i in range(12)]
    try:
        assert len({layout.last_seen(r) for r in ids}) > 1  # spread over shards
        for i, runner_id in enumerate(ids):
            await runners.claim(runner_id, f"replica-{i % 2}/sid{i}")
        await sessions.create_session("cluster-app-0123456789", ids[3])
        total, listed = await overview.online_runners()
        assert total == len(ids)
        by_id = {r.runner_id: r for r in listed}
        assert set(by_id) == set(ids)
        assert by_id[ids[3]].apps == ["cluster-app-0123456789"]
        assert by_id[ids[4]].replica == "replica-0" and by_id[ids[5]].replica == "replica-1"
        pairs = await overview.pairings(listed)
        assert [(p.app_session_id, p.runner_id) for p in pairs] == [
            ("cluster-app-0123456789", ids[3])
        ]
        assert pairs[0].paired_at is not None
    finally:
        await sessions.remove_session("cluster-app-0123456789")
        for i, runner_id in enumerate(ids):
            await runners.release(runner_id, f"replica-{i % 2}/sid{i}")
        for shard in layout.last_seen_shards():
            await store.delete(shard)
        await store.aclose()
