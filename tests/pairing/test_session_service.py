"""PairingSessionService on both stores: its seven methods over its exact Redis layout (the
session JSON, the runner's set of apps, the heartbeat key), which other services read."""

from __future__ import annotations

import json

import pytest

from pairing import PairingSession, PairingSessionService, SessionStatus, keys
from pairing.store import Redis
from tests.support.store_state import server_now_ms, snapshot, write_heartbeat, write_session


@pytest.fixture
def svc(store: Redis) -> PairingSessionService:
    return PairingSessionService(store)


async def members(client: Redis, runner_id: str) -> set[str]:
    return {m.decode() for m in await client.smembers(keys.runner_apps(runner_id))}


# -- create / get ----------------------------------------------------------------------------


async def test_create_session_writes_the_session_json(
    store: Redis, svc: PairingSessionService
) -> None:
    before = await server_now_ms(store)
    await svc.create_session("app-1", "runner-1")
    after = await server_now_ms(store)

    raw = await store.get("pairing:session:app-1")
    assert raw is not None
    body = json.loads(raw)
    assert set(body) == {"appSessionId", "runnerId", "pairedAt", "isActive"}
    assert body["appSessionId"] == "app-1"
    assert body["runnerId"] == "runner-1"
    assert body["isActive"] is True
    assert type(body["pairedAt"]) is int  # not a float, not 1.7e+12
    assert before <= body["pairedAt"] <= after
    assert await store.ttl("pairing:session:app-1") == -1  # pairings survive app disconnects
    assert await store.type("pairing:apps:runner-1") == b"set"
    assert await members(store, "runner-1") == {"app-1"}


async def test_get_session_returns_what_was_stored(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.create_session("app-1", "runner-1")
    raw = json.loads(await store.get("pairing:session:app-1"))
    session = await svc.get_session("app-1")
    assert session == PairingSession(
        app_session_id="app-1", runner_id="runner-1", paired_at=raw["pairedAt"], is_active=True
    )


async def test_get_session_of_unknown_app_is_none(svc: PairingSessionService) -> None:
    assert await svc.get_session("nobody") is None


async def test_get_session_reads_json_written_by_another_implementation(
    store: Redis, svc: PairingSessionService
) -> None:
    body = {
        "appSessionId": "app-ts",
        "runnerId": "runner-ts",
        "pairedAt": 1_700_000_000_123,
        "isActive": False,
    }
    await store.set("pairing:session:app-ts", json.dumps(body))
    assert await svc.get_session("app-ts") == PairingSession(
        "app-ts", "runner-ts", 1_700_000_000_123, False
    )


async def test_ids_with_odd_characters_round_trip(store: Redis, svc: PairingSessionService) -> None:
    app, runner = 'app"quote\\slash', "runner:with.dots-and_under"
    await svc.create_session(app, runner)
    session = await svc.get_session(app)
    assert session is not None
    assert (session.app_session_id, session.runner_id) == (app, runner)
    assert await svc.get_apps_by_runner_id(runner) == [app]


# -- remove ----------------------------------------------------------------------------------


async def test_remove_session_deletes_key_and_set_member(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.create_session("app-1", "runner-1")
    await svc.create_session("app-2", "runner-1")
    await svc.remove_session("app-1")
    assert await store.exists("pairing:session:app-1") == 0
    assert await svc.get_session("app-1") is None
    assert await members(store, "runner-1") == {"app-2"}
    assert await svc.get_session("app-2") is not None


async def test_remove_session_is_idempotent(store: Redis, svc: PairingSessionService) -> None:
    await svc.create_session("app-1", "runner-1")
    await svc.remove_session("app-1")
    await svc.remove_session("app-1")
    await svc.remove_session("never-paired")
    assert await store.exists("pairing:session:app-1", "pairing:apps:runner-1") == 0


# -- several apps, re-pairing -----------------------------------------------------------------


async def test_one_runner_many_apps(store: Redis, svc: PairingSessionService) -> None:
    apps = [f"app-{i}" for i in range(5)]
    for app in apps:
        await svc.create_session(app, "runner-1")
    assert await svc.get_apps_by_runner_id("runner-1") == sorted(apps)
    for app in apps:
        session = await svc.get_session(app)
        assert session is not None and session.runner_id == "runner-1"
    await svc.remove_session("app-2")
    assert await svc.get_apps_by_runner_id("runner-1") == sorted(set(apps) - {"app-2"})


async def test_re_pairing_moves_the_app_out_of_the_old_runners_set(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.create_session("app-1", "runner-a")
    await svc.create_session("app-2", "runner-a")
    await svc.create_session("app-1", "runner-b")
    assert await svc.get_apps_by_runner_id("runner-a") == ["app-2"]
    assert await svc.get_apps_by_runner_id("runner-b") == ["app-1"]
    session = await svc.get_session("app-1")
    assert session is not None and session.runner_id == "runner-b"
    assert (await snapshot(store)).problems() == []


async def test_re_pairing_the_last_app_leaves_no_empty_set(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.create_session("app-1", "runner-a")
    await svc.create_session("app-1", "runner-b")
    assert await store.exists("pairing:apps:runner-a") == 0


async def test_pairing_again_with_the_same_runner_keeps_one_membership(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.create_session("app-1", "runner-a")
    await svc.create_session("app-1", "runner-a")
    assert await svc.get_apps_by_runner_id("runner-a") == ["app-1"]
    session = await svc.get_session("app-1")
    assert session is not None and session.runner_id == "runner-a"


async def test_get_apps_by_unknown_runner_is_empty(svc: PairingSessionService) -> None:
    assert await svc.get_apps_by_runner_id("nobody") == []


# -- heartbeats ------------------------------------------------------------------------------


async def test_update_heartbeat_writes_server_ms_with_ttl(
    store: Redis, svc: PairingSessionService
) -> None:
    before = await server_now_ms(store)
    await svc.update_heartbeat("runner-1")
    after = await server_now_ms(store)
    raw = (await store.get("runner:heartbeat:runner-1")).decode()
    assert raw.isdigit()  # epoch ms as a plain decimal
    assert before <= int(raw) <= after
    pttl = await store.pttl("runner:heartbeat:runner-1")
    assert 55_000 < pttl <= 60_000
    # the sweeper's index agrees with the key
    assert await store.zscore(keys.RUNNER_LAST_SEEN, "runner-1") == int(raw)


async def test_update_heartbeat_refreshes_value_and_ttl(
    store: Redis, svc: PairingSessionService
) -> None:
    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-1", now - 20_000, ttl_ms=5_000)
    await svc.update_heartbeat("runner-1")
    assert int(await store.get("runner:heartbeat:runner-1")) >= now
    assert await store.pttl("runner:heartbeat:runner-1") > 55_000


async def test_heartbeat_options_change_ttl_and_timeout(store: Redis) -> None:
    svc = PairingSessionService(store, heartbeat_timeout_s=5, heartbeat_ttl_s=7)
    await svc.update_heartbeat("runner-1")
    pttl = await store.pttl("runner:heartbeat:runner-1")
    assert 5_000 < pttl <= 7_000
    assert await svc.is_runner_online("runner-1")

    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-1", now - 4_000)
    assert await svc.is_runner_online("runner-1")
    await write_heartbeat(store, "runner-1", now - 6_000)
    assert not await svc.is_runner_online("runner-1")
    # the default service still calls a 6 s old heartbeat online
    assert await PairingSessionService(store).is_runner_online("runner-1")


async def test_is_runner_online_after_heartbeat(svc: PairingSessionService) -> None:
    assert not await svc.is_runner_online("runner-1")
    await svc.update_heartbeat("runner-1")
    assert await svc.is_runner_online("runner-1")
    assert not await svc.is_runner_online("runner-2")


@pytest.mark.parametrize(
    ("age_ms", "online"),
    [(0, True), (15_000, True), (29_000, True), (31_000, False), (45_000, False)],
)
async def test_is_runner_online_30s_boundary_by_server_clock(
    store: Redis, svc: PairingSessionService, age_ms: int, online: bool
) -> None:
    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-1", now - age_ms)
    assert await svc.is_runner_online("runner-1") is online


async def test_heartbeat_in_the_future_counts_as_online(
    store: Redis, svc: PairingSessionService
) -> None:
    """A replica whose clock ran ahead wrote it; the runner is alive, not dead."""
    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-1", now + 5_000)
    assert await svc.is_runner_online("runner-1")


async def test_missing_or_garbage_heartbeat_is_offline(
    store: Redis, svc: PairingSessionService
) -> None:
    assert not await svc.is_runner_online("runner-1")
    await store.set("runner:heartbeat:runner-1", "not-a-number")
    assert not await svc.is_runner_online("runner-1")


# -- remove_all_sessions_for_runner ----------------------------------------------------------


async def test_remove_all_sessions_returns_exactly_the_unpaired_apps(
    store: Redis, svc: PairingSessionService
) -> None:
    for app in ("app-1", "app-2", "app-3"):
        await svc.create_session(app, "runner-a")
    await svc.create_session("app-b", "runner-b")
    # Stale state: app-moved is in runner-a's set, but its session points at runner-b.
    await write_session(store, "app-moved", "runner-b")
    await store.sadd("pairing:apps:runner-a", "app-moved")
    await store.sadd("pairing:apps:runner-b", "app-moved")
    # A set member with no session at all (not paired, so not "unpaired" now).
    await store.sadd("pairing:apps:runner-a", "app-ghost")

    removed = await svc.remove_all_sessions_for_runner("runner-a")

    assert removed == ["app-1", "app-2", "app-3"]
    for app in removed:
        assert await svc.get_session(app) is None
    assert await store.exists("pairing:apps:runner-a") == 0
    moved = await svc.get_session("app-moved")
    assert moved is not None and moved.runner_id == "runner-b"
    assert await svc.get_apps_by_runner_id("runner-b") == ["app-b", "app-moved"]
    assert (await snapshot(store)).problems() == []


async def test_remove_all_sessions_twice_and_for_unknown_runner(
    svc: PairingSessionService,
) -> None:
    await svc.create_session("app-1", "runner-a")
    assert await svc.remove_all_sessions_for_runner("runner-a") == ["app-1"]
    assert await svc.remove_all_sessions_for_runner("runner-a") == []
    assert await svc.remove_all_sessions_for_runner("nobody") == []


async def test_remove_all_sessions_keeps_the_heartbeat(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.update_heartbeat("runner-a")
    await svc.create_session("app-1", "runner-a")
    await svc.remove_all_sessions_for_runner("runner-a")
    assert await svc.is_runner_online("runner-a")


# -- pair / unpair / get_session_status ------------------------------------------------------


async def test_pair_returns_the_previous_runner(store: Redis, svc: PairingSessionService) -> None:
    assert await svc.pair("app-1", "runner-a") is None
    assert await svc.pair("app-1", "runner-b") == "runner-a"
    assert await svc.pair("app-1", "runner-b") == "runner-b"
    assert await svc.get_apps_by_runner_id("runner-a") == []
    assert await svc.get_apps_by_runner_id("runner-b") == ["app-1"]


async def test_unpair_returns_the_runner_it_was_paired_with(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.pair("app-1", "runner-a")
    await svc.pair("app-2", "runner-a")
    assert await svc.unpair("app-1") == "runner-a"
    assert await svc.unpair("app-1") is None
    assert await svc.unpair("never") is None
    assert await svc.get_apps_by_runner_id("runner-a") == ["app-2"]


async def test_pair_over_an_unreadable_session_replaces_it(
    store: Redis, svc: PairingSessionService
) -> None:
    await store.set("pairing:session:app-1", "{not json")
    assert await svc.pair("app-1", "runner-a") is None
    session = await svc.get_session("app-1")
    assert session is not None and session.runner_id == "runner-a"


async def test_get_session_status(store: Redis, svc: PairingSessionService) -> None:
    assert await svc.get_session_status("app-1") == SessionStatus(None, False)

    await svc.create_session("app-1", "runner-a")
    status = await svc.get_session_status("app-1")
    assert status.session == await svc.get_session("app-1")
    assert status.runner_online is False  # never beat

    await svc.update_heartbeat("runner-a")
    assert (await svc.get_session_status("app-1")).runner_online is True

    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-a", now - 31_000)
    status = await svc.get_session_status("app-1")
    assert status.session is not None and status.runner_online is False

    await write_heartbeat(store, "runner-a", now - 29_000)
    assert (await svc.get_session_status("app-1")).runner_online is True

    # the status follows the app's own runner, not any other
    await svc.create_session("app-1", "runner-b")
    status = await svc.get_session_status("app-1")
    assert status.session is not None and status.session.runner_id == "runner-b"
    assert status.runner_online is False


async def test_get_session_status_uses_the_configured_timeout(store: Redis) -> None:
    svc = PairingSessionService(store, heartbeat_timeout_s=2)
    await svc.create_session("app-1", "runner-a")
    now = await server_now_ms(store)
    await write_heartbeat(store, "runner-a", now - 3_000)
    assert (await svc.get_session_status("app-1")).runner_online is False
    assert (await PairingSessionService(store).get_session_status("app-1")).runner_online


async def test_load_scripts_then_every_method_still_works(
    store: Redis, svc: PairingSessionService
) -> None:
    await svc.load_scripts()
    await svc.update_heartbeat("r")
    await svc.create_session("a", "r")
    assert await svc.is_runner_online("r")
    assert (await svc.get_session_status("a")).runner_online
    assert await svc.remove_all_sessions_for_runner("r") == ["a"]
