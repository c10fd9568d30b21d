"""RunnerRegistry on both stores: ownership by connection, guarded heartbeats, the sweep."""

from __future__ import annotations

import pytest

from pairing import PairingSessionService, RunnerRegistry, StaleRunner, keys
from pairing.store import Redis
from tests.support.store_state import server_now_ms, snapshot, write_heartbeat, write_session


@pytest.fixture
def registry(store: Redis) -> RunnerRegistry:
    return RunnerRegistry(store)


async def heartbeat_ms(store: Redis, runner: str) -> int | None:
    raw = await store.get(keys.heartbeat(runner))
    return None if raw is None else int(raw)


# -- claim -----------------------------------------------------------------------------------


async def test_claim_returns_the_previous_owner(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    assert await registry.claim("r1", "conn-1") is None
    assert await registry.owner("r1") == "conn-1"
    assert await registry.claim("r1", "conn-2") == "conn-1"
    assert await registry.owner("r1") == "conn-2"
    assert await registry.claim("r1", "conn-2") == "conn-2"
    assert await registry.owner("r2") is None


async def test_claim_records_a_heartbeat(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    before = await server_now_ms(store)
    await registry.claim("r1", "conn-1")
    after = await server_now_ms(store)
    beat = await heartbeat_ms(store, "r1")
    assert beat is not None and before <= beat <= after
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") == beat
    assert 55_000 < await store.pttl(keys.heartbeat("r1")) <= 60_000
    assert await sessions.is_runner_online("r1")


async def test_claim_keeps_existing_pairings(
    registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    """A reconnect takes the runner over; its apps stay paired."""
    await registry.claim("r1", "conn-1")
    await sessions.create_session("a1", "r1")
    await registry.claim("r1", "conn-2")
    assert await sessions.get_apps_by_runner_id("r1") == ["a1"]


async def test_heartbeat_ttl_option(store: Redis) -> None:
    registry = RunnerRegistry(store, heartbeat_ttl_s=5)
    await registry.claim("r1", "conn-1")
    assert 4_000 < await store.pttl(keys.heartbeat("r1")) <= 5_000
    await registry.heartbeat("r1", "conn-1")
    assert 4_000 < await store.pttl(keys.heartbeat("r1")) <= 5_000


# -- heartbeat -------------------------------------------------------------------------------


async def test_owner_heartbeat_is_written(store: Redis, registry: RunnerRegistry) -> None:
    await registry.claim("r1", "conn-1")
    old = await server_now_ms(store) - 20_000
    await write_heartbeat(store, "r1", old)
    assert await registry.heartbeat("r1", "conn-1") is True
    beat = await heartbeat_ms(store, "r1")
    assert beat is not None and beat > old + 19_000
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") == beat


async def test_taken_over_connection_cannot_heartbeat(
    store: Redis, registry: RunnerRegistry
) -> None:
    await registry.claim("r1", "conn-1")
    await registry.claim("r1", "conn-2")
    old = await server_now_ms(store) - 20_000
    await write_heartbeat(store, "r1", old)
    assert await registry.heartbeat("r1", "conn-1") is False
    assert await heartbeat_ms(store, "r1") == old  # nothing written
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") == old
    assert await registry.owner("r1") == "conn-2"
    assert await registry.heartbeat("r1", "conn-2") is True


async def test_heartbeat_reclaims_a_missing_owner(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    """The owner key vanished (Redis lost data, or a sweep): the live connection takes it."""
    assert await registry.heartbeat("r1", "conn-1") is True
    assert await registry.owner("r1") == "conn-1"
    assert await sessions.is_runner_online("r1")
    assert await registry.heartbeat("r1", "conn-2") is False


# -- release ---------------------------------------------------------------------------------


async def test_release_by_the_owner_unpairs_its_apps(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    await registry.claim("r1", "conn-1")
    await registry.claim("r2", "conn-9")
    for app in ("a2", "a1", "a3"):
        await sessions.create_session(app, "r1")
    await sessions.create_session("b1", "r2")
    # stale member: a4 is in r1's set but paired with r2
    await write_session(store, "a4", "r2")
    await store.sadd(keys.runner_apps("r1"), "a4")
    await store.sadd(keys.runner_apps("r2"), "a4")

    assert await registry.release("r1", "conn-1") == ["a1", "a2", "a3"]

    assert await registry.owner("r1") is None
    assert await store.exists(keys.heartbeat("r1"), keys.runner_apps("r1")) == 0
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") is None
    assert not await sessions.is_runner_online("r1")
    for app in ("a1", "a2", "a3"):
        assert await sessions.get_session(app) is None
    snap = await snapshot(store)
    assert snap.sessions == {"b1": "r2", "a4": "r2"}
    assert snap.problems() == []
    assert await registry.owner("r2") == "conn-9"


async def test_release_by_a_taken_over_connection_removes_nothing(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    await registry.claim("r1", "conn-old")
    await sessions.create_session("a1", "r1")
    await registry.claim("r1", "conn-new")
    beat = await heartbeat_ms(store, "r1")

    assert await registry.release("r1", "conn-old") is None

    assert await registry.owner("r1") == "conn-new"
    assert await sessions.get_apps_by_runner_id("r1") == ["a1"]
    assert await sessions.get_session("a1") is not None
    assert await heartbeat_ms(store, "r1") == beat
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") == beat
    # the new owner's release does remove them
    assert await registry.release("r1", "conn-new") == ["a1"]


async def test_release_without_apps_and_twice(
    registry: RunnerRegistry,
) -> None:
    await registry.claim("r1", "conn-1")
    assert await registry.release("r1", "conn-1") == []
    assert await registry.release("r1", "conn-1") is None
    assert await registry.release("never", "conn-1") is None


# -- sweep -----------------------------------------------------------------------------------


async def test_sweep_removes_stale_runners_and_their_pairings(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    for runner in ("fresh", "stale", "stale-no-key"):
        await registry.claim(runner, f"conn-{runner}")
    await sessions.create_session("f1", "fresh")
    await sessions.create_session("s2", "stale")
    await sessions.create_session("s1", "stale")
    await sessions.create_session("n1", "stale-no-key")
    now = await server_now_ms(store)
    await write_heartbeat(store, "stale", now - 31_000)
    await write_heartbeat(store, "stale-no-key", now - 61_000)
    await store.delete(keys.heartbeat("stale-no-key"))  # its key expired long ago

    swept = await registry.sweep()

    assert sorted(swept, key=lambda s: s.runner_id) == [
        StaleRunner("stale", ["s1", "s2"]),
        StaleRunner("stale-no-key", ["n1"]),
    ]
    for runner in ("stale", "stale-no-key"):
        assert await registry.owner(runner) is None
        assert await store.exists(keys.heartbeat(runner), keys.runner_apps(runner)) == 0
        assert await store.zscore(keys.RUNNER_LAST_SEEN, runner) is None
    snap = await snapshot(store)
    assert snap.sessions == {"f1": "fresh"}
    assert snap.problems() == []
    assert await registry.owner("fresh") == "conn-fresh"
    assert await sessions.is_runner_online("fresh")
    assert await registry.sweep() == []


async def test_sweep_30s_boundary(store: Redis, registry: RunnerRegistry) -> None:
    now = await server_now_ms(store)
    await write_heartbeat(store, "r-29", now - 29_000)
    await write_heartbeat(store, "r-31", now - 31_000)
    assert [s.runner_id for s in await registry.sweep()] == ["r-31"]
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r-29") == now - 29_000


async def test_sweep_trusts_a_fresh_heartbeat_key_over_a_stale_index(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    """The zset says stale but the heartbeat key (what PairingSessionService reads as online)
    is fresh: keep the runner and bring its index entry up to date."""
    await registry.claim("r1", "conn-1")
    await sessions.create_session("a1", "r1")
    beat = await heartbeat_ms(store, "r1")
    assert beat is not None
    await store.zadd(keys.RUNNER_LAST_SEEN, {"r1": beat - 100_000})
    assert await registry.sweep() == []
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "r1") == beat
    assert await sessions.get_apps_by_runner_id("r1") == ["a1"]
    assert await registry.owner("r1") == "conn-1"


async def test_sweep_leaves_apps_that_moved_away(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    await registry.claim("dead", "conn-1")
    await sessions.create_session("a1", "dead")
    await write_session(store, "a2", "alive")  # stale member of dead's set
    await store.sadd(keys.runner_apps("dead"), "a2")
    await store.sadd(keys.runner_apps("alive"), "a2")
    await write_heartbeat(store, "dead", await server_now_ms(store) - 40_000)
    assert await registry.sweep() == [StaleRunner("dead", ["a1"])]
    assert (await snapshot(store)).sessions == {"a2": "alive"}


async def test_sweep_limit(store: Redis, registry: RunnerRegistry) -> None:
    now = await server_now_ms(store)
    for i in range(5):
        await write_heartbeat(store, f"r{i}", now - 40_000 - i)
    first = await registry.sweep(limit=2)
    second = await registry.sweep(limit=2)
    third = await registry.sweep(limit=2)
    assert [len(first), len(second), len(third)] == [2, 2, 1]
    names = [s.runner_id for s in first + second + third]
    assert sorted(names) == [f"r{i}" for i in range(5)]
    assert first == [StaleRunner("r4", []), StaleRunner("r3", [])]  # the stalest first
    assert await registry.sweep() == []


async def test_sweep_uses_the_configured_timeout(store: Redis) -> None:
    strict = RunnerRegistry(store, heartbeat_timeout_s=5)
    await write_heartbeat(store, "r1", await server_now_ms(store) - 6_000)
    assert await RunnerRegistry(store).sweep() == []
    assert await strict.sweep() == [StaleRunner("r1", [])]


async def test_heartbeat_after_being_swept_reclaims(
    store: Redis, registry: RunnerRegistry, sessions: PairingSessionService
) -> None:
    """A runner judged dead that was only slow gets its ownership back on its next beat."""
    await registry.claim("r1", "conn-1")
    await write_heartbeat(store, "r1", await server_now_ms(store) - 31_000)
    assert [s.runner_id for s in await registry.sweep()] == ["r1"]
    assert await registry.heartbeat("r1", "conn-1") is True
    assert await registry.owner("r1") == "conn-1"
    assert await sessions.is_runner_online("r1")
