"""Several gateway processes sharing one store, with real python-socketio clients.

Each test runs twice (tests.support.backends): on one redis-server and on a 3-master Redis Cluster
(keys hash-tagged, fan-out on sharded channels).

Each replica is ``python -m gateway`` in its own process (tests.support.gateways.GatewayProcess)
with the short test timings (heartbeat timeout 1.5 s, sweep every 0.3 s), so runners here
heartbeat like a daemon does (tests.support.replicas.Heartbeats).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pairing.store import Redis
from tests.support.backends import Backend, flushed
from tests.support.gateways import (
    TEST_CONFIG,
    Client,
    GatewayProcess,
    emit_unacked,
    watch_disconnect,
)
from tests.support.replicas import (
    UNPAIRED,
    Heartbeats,
    collect,
    command_reaches,
    output_reaches,
    pair,
    paired_online,
    register,
)

APP_1 = "app-one-0123456789abcdef"
APP_2 = "app-two-0123456789abcdef"
N = 200

Start = Callable[..., GatewayProcess]
Connect = Callable[..., Any]

#: Longest a duplicate notification could take: the heartbeat timeout plus two sweeps.
QUIET_S = TEST_CONFIG["heartbeat"]["timeout_s"] + 2 * TEST_CONFIG["sweep_interval_s"]


@pytest.fixture
async def backend_client(backend: Backend) -> AsyncIterator[Redis]:
    """The session's private store (one Redis, or a cluster), flushed before the replicas start."""
    client = await flushed(backend)
    yield client
    await client.aclose()


def replicas(start: Start, store_url: str, n: int, **config: Any) -> list[GatewayProcess]:
    return [start(store_url, config) for _ in range(n)]


async def runner_with_two_apps(
    clients: Connect,
    beats: Heartbeats,
    runner_gw: GatewayProcess,
    app_gws: tuple[GatewayProcess, GatewayProcess],
    runner_id: str,
) -> tuple[Client, Client, Client]:
    """A registered, heartbeating runner and two apps paired with it, each where given."""
    runner = await clients(runner_gw.url)
    app1 = await clients(app_gws[0].url, auth={"appSessionId": APP_1})
    app2 = await clients(app_gws[1].url, auth={"appSessionId": APP_2})
    await register(runner, runner_id)
    beats.start(runner, runner_id)
    await pair(app1, runner, runner_id)
    await pair(app2, runner, runner_id)
    return runner, app1, app2


async def assert_quiet(event: str, *apps: Client, wait_s: float = QUIET_S) -> None:
    """No app receives ``event`` within ``wait_s`` (a bounded wait for an absence)."""

    async def none_for(app: Client) -> None:
        with pytest.raises(TimeoutError):
            extra = await app.next(event, timeout=wait_s)
            pytest.fail(f"unexpected {event}: {extra}")

    await asyncio.gather(*(none_for(a) for a in apps))


async def test_pair_relay_and_order_across_three_replicas(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a, b, c = replicas(gateway_procs, backend.url, 3)
    runner, app1, app2 = await runner_with_two_apps(clients, beats, a, (b, c), "r-relay")

    await command_reaches(app1, APP_1, runner, "ls -la")
    await command_reaches(app2, APP_2, runner, {"k": [1, 2]})
    await output_reaches(runner, "r-relay", "hello", [app1, app2])

    # 200 commands from each app, emitted without waiting for acks, both apps at once.
    acks1 = await emit_unacked(app1, "app:command", ({"data": f"1:{i}"} for i in range(N)))
    acks2 = await emit_unacked(app2, "app:command", ({"data": f"2:{i}"} for i in range(N)))
    inputs = await collect(runner, "terminal:input", 2 * N)
    for app_id, prefix in ((APP_1, "1"), (APP_2, "2")):
        mine = [m["data"] for m in inputs if m["appSessionId"] == app_id]
        assert mine == [f"{prefix}:{i}" for i in range(N)]
    assert await asyncio.wait_for(asyncio.gather(*acks1, *acks2), 20) == [{"success": True}] * (
        2 * N
    )

    # 200 outputs, emitted without waiting for acks, reach each app in order.
    out_acks = await emit_unacked(runner, "runner:output", ({"data": f"o{i}\n"} for i in range(N)))
    for app in (app1, app2):
        got = await collect(app, "terminal:output", N)
        assert [m["data"] for m in got] == [f"o{i}\n" for i in range(N)]
        assert {m["runnerId"] for m in got} == {"r-relay"}
    assert (
        await asyncio.wait_for(asyncio.gather(*out_acks), 20)
        == [{"success": True, "delivered": 2}] * N
    )
    assert runner.pending("terminal:input") == 0
    assert app1.pending("pairing:unpaired") == app2.pending("pairing:unpaired") == 0


async def test_runner_disconnect_unpairs_apps_on_other_replicas_once(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a, b, c = replicas(gateway_procs, backend.url, 3)
    runner, app1, app2 = await runner_with_two_apps(clients, beats, a, (b, c), "r-leaves")
    await beats.stop(runner)
    await runner.close()

    expected = {"runnerId": "r-leaves", "reason": "RUNNER_DISCONNECTED"}
    assert await app1.next("pairing:unpaired") == expected
    assert await app2.next("pairing:unpaired") == expected
    for app in (app1, app2):
        assert await app.call("app:status", {}) == UNPAIRED
        assert (await app.call("app:command", {"data": "x"}))["error"] == "NOT_PAIRED"
    assert (
        await backend_client.exists(backend.layout.session(APP_1), backend.layout.session(APP_2))
        == 0
    )
    # Exactly one each: no second notice from another replica or a later sweep.
    await assert_quiet("pairing:unpaired", app1, app2)


async def test_runner_takeover_and_app_resume_on_other_replicas(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a, b, c = replicas(gateway_procs, backend.url, 3)
    old, app1, app2 = await runner_with_two_apps(clients, beats, a, (b, c), "r-moves")
    old_gone = watch_disconnect(old)

    # The same runnerId registers from a new socket on B while the old one on A is up.
    new = await clients(b.url)
    await register(new, "r-moves")
    beats.start(new, "r-moves")
    await asyncio.wait_for(old_gone.wait(), 10)  # A disconnected it, told by B's evict
    await beats.stop(old)
    assert not old.sio.connected

    for app, app_id, data in ((app1, APP_1, "after-1"), (app2, APP_2, "after-2")):
        await command_reaches(app, app_id, new, data)
    await output_reaches(new, "r-moves", "from-new", [app1, app2])
    assert old.pending("terminal:input") == 0

    # App 1 comes back with its appSessionId on C while its old socket on B is still up.
    app1_gone = watch_disconnect(app1)
    app1_new = await clients(c.url, auth={"appSessionId": APP_1})
    await asyncio.wait_for(app1_gone.wait(), 10)
    assert await app1_new.call("app:status") == paired_online("r-moves")
    await command_reaches(app1_new, APP_1, new, "resumed")
    await output_reaches(new, "r-moves", "to-both", [app1_new, app2])
    assert app1.pending("terminal:output") == 0

    # The takeovers removed nothing and told nobody they were unpaired.
    assert await app2.call("app:status") == paired_online("r-moves")
    members = await backend_client.smembers(backend.layout.runner_apps("r-moves"))
    assert {m.decode() for m in members} == {APP_1, APP_2}
    for app in (app1, app1_new, app2):
        assert app.pending("pairing:unpaired") == 0
    assert new.pending("pairing:app_unpaired") == 0
    assert await new.call("runner:heartbeat", {"runnerId": "r-moves"}) == {"success": True}


async def test_sigkill_of_the_runners_replica_is_swept_by_a_survivor(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a, b, c = replicas(gateway_procs, backend.url, 3)
    runner, app1, app2 = await runner_with_two_apps(clients, beats, a, (b, c), "r-dies")
    assert await app1.call("app:command", {"data": "before"}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": APP_1, "data": "before"}

    killed_at = time.monotonic()
    a.kill()  # SIGKILL: no disconnect handler runs anywhere
    expected = {"runnerId": "r-dies", "reason": "RUNNER_OFFLINE"}
    assert await app1.next("pairing:unpaired", timeout=20) == expected
    assert await app2.next("pairing:unpaired", timeout=20) == expected
    elapsed = time.monotonic() - killed_at
    hb = TEST_CONFIG["heartbeat"]
    print(
        f"\nunpaired after SIGKILL in {elapsed:.2f}s "
        f"(heartbeat timeout {hb['timeout_s']}s, sweep {TEST_CONFIG['sweep_interval_s']}s)"
    )
    assert elapsed < 10
    await beats.stop(runner)

    for app in (app1, app2):
        assert await app.call("app:status") == UNPAIRED
    layout = backend.layout
    assert await backend_client.exists(layout.session(APP_1), layout.session(APP_2)) == 0
    assert await backend_client.exists(layout.runner_apps("r-dies"), layout.owner("r-dies")) == 0
    await assert_quiet("pairing:unpaired", app1, app2, wait_s=1.0)


async def test_sigterm_keeps_pairings_for_a_runner_that_moves(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    # A runner daemon reconnects within the heartbeat timeout (30 s in production); give it
    # 5 s here, so that the survivors' sweepers do not race the test's reconnect.
    slow = {"heartbeat": {"timeout_s": 5, "ttl_s": 10}}
    a, b, c = replicas(gateway_procs, backend.url, 3, **slow)
    runner, app1, app2 = await runner_with_two_apps(clients, beats, a, (b, c), "r-drains")
    runner_gone = watch_disconnect(runner)

    assert a.terminate() == 0  # SIGTERM: graceful, exit code 0
    # Right after the exit, before anyone else could repair anything: all still there.
    for app_id in (APP_1, APP_2):
        raw = await backend_client.get(backend.layout.session(app_id))
        assert raw is not None and b'"runnerId":"r-drains"' in raw
    members = await backend_client.smembers(backend.layout.runner_apps("r-drains"))
    assert {m.decode() for m in members} == {APP_1, APP_2}
    await asyncio.wait_for(runner_gone.wait(), 10)
    await beats.stop(runner)

    moved = await clients(b.url)
    await register(moved, "r-drains")
    beats.start(moved, "r-drains")
    for app in (app1, app2):
        assert await app.call("app:status") == paired_online("r-drains")
    await command_reaches(app2, APP_2, moved, "still here")
    await output_reaches(moved, "r-drains", "back", [app1, app2])
    for app in (app1, app2):
        assert app.pending("pairing:unpaired") == 0


async def test_local_relay_publishes_nothing_cross_replica_one_per_message(
    backend: Backend,
    backend_client: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    n = 50
    a, b = replicas(gateway_procs, backend.url, 2)
    local_runner = await clients(a.url)
    local_app = await clients(a.url, auth={"appSessionId": APP_1})
    remote_runner = await clients(a.url)
    remote_app = await clients(b.url, auth={"appSessionId": APP_2})
    for runner, app, runner_id in (
        (local_runner, local_app, "r-local"),
        (remote_runner, remote_app, "r-remote"),
    ):
        await register(runner, runner_id)
        beats.start(runner, runner_id)
        await pair(app, runner, runner_id)

    async def relay(app: Client, runner: Client) -> tuple[int, int]:
        before = backend.publishes()
        acks = await emit_unacked(app, "app:command", ({"data": i} for i in range(n)))
        assert await asyncio.wait_for(asyncio.gather(*acks), 20) == [{"success": True}] * n
        assert [m["data"] for m in await collect(runner, "terminal:input", n)] == list(range(n))
        middle = backend.publishes()
        acks = await emit_unacked(runner, "runner:output", ({"data": i} for i in range(n)))
        assert (
            await asyncio.wait_for(asyncio.gather(*acks), 20)
            == [{"success": True, "delivered": 1}] * n
        )
        assert [m["data"] for m in await collect(app, "terminal:output", n)] == list(range(n))
        after = backend.publishes()
        return middle - before, after - middle

    local = await relay(local_app, local_runner)
    cross = await relay(remote_app, remote_runner)
    print(
        f"\nPUBLISH calls for {n} commands / {n} outputs: "
        f"same replica {local[0]} / {local[1]}, across replicas {cross[0]} / {cross[1]}"
    )
    assert local == (0, 0)
    assert cross == (n, n)
