"""Redis failing under running gateway processes: bounded UNAVAILABLE acks, readiness, recovery.

Each test has its own store (``own_backend``, tests.support.backends): a redis-server and,
as a second run, a 3-master Redis Cluster. It kills it (SIGKILL, data lost; on a cluster
every master, so that no replica can take over), freezes it (SIGSTOP: connections open but nothing
answers) and restarts it on the same ports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.support.backends import Backend
from tests.support.gateways import (
    TEST_CONFIG,
    Client,
    GatewayProcess,
    emit_unacked,
    watch_disconnect,
)
from tests.support.replicas import (
    Heartbeats,
    bad_log_lines,
    collect,
    get_status,
    pair,
    paired_online,
    register,
    relay_both_ways,
    wait_ready,
)

APP_1 = "fault-app-1-0123456789"
APP_2 = "fault-app-2-0123456789"
APP_3 = "fault-app-3-0123456789"

#: Generous bound for one ack while the store is down: catches hangs, not slowness.
ACK_BOUND_S = TEST_CONFIG["store_timeout_s"] * 3 + 2

Start = Callable[..., GatewayProcess]
Connect = Callable[..., Any]

#: Events run off the socket's read loop (GatewayServer._drain), so pings are answered while a
#: backlog waits on the store (test_a_backlog_behind_a_frozen_store_... proves it with the 1 s
#: test ping timeout). These outage tests still use a long ping timeout so that they measure
#: store behaviour alone, not ping timing on a loaded machine.
FAULT_CONFIG: dict[str, Any] = {"socketio": {"ping_interval_s": 1, "ping_timeout_s": 10}}


def unavailable(ack: Any) -> bool:
    return isinstance(ack, dict) and ack.get("error") == "UNAVAILABLE" and "success" not in ack


async def timed_call(client: Client, event: str, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    ack = await client.call(event, *args, timeout=30)
    return ack, time.monotonic() - started


async def check_store_events_unavailable(
    runner: Client, app: Client, runner_events: list[tuple[str, Any]]
) -> dict[str, float]:
    """Every event that needs the store gets UNAVAILABLE within the bound; returns the times.

    The runner's and the app's events run concurrently (each socket handles its events one
    at a time, so on one socket they queue up behind each other).
    """
    app_events: list[tuple[str, Any]] = [
        ("app:command", {"data": "lost"}),
        ("app:status", {}),
        ("app:pair", {"pairingCode": "ABCD-2345"}),
        ("app:unpair", {}),
    ]
    times: dict[str, float] = {}

    async def run(client: Client, events: list[tuple[str, Any]]) -> None:
        for event, payload in events:
            ack, took = await timed_call(client, event, payload)
            assert unavailable(ack), (event, ack)
            assert took < ACK_BOUND_S, (event, took)
            times[event] = took

    await asyncio.gather(run(runner, runner_events), run(app, app_events))
    # Events that need no store still get their usual answer, quickly.
    for event, args in (("no:such:event", ({},)), ("app:command", ())):
        ack, took = await timed_call(app, event, *args)
        assert ack["error"] == "INVALID_PAYLOAD", (event, ack)
        assert took < ACK_BOUND_S
    return times


async def check_not_ready(*gws: GatewayProcess) -> None:
    for gw in gws:
        status, body = await get_status(gw.url + "/readyz")
        assert status == 503 and body["store"] is False, body
        assert (await get_status(gw.url + "/healthz"))[0] == 200
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"


async def test_redis_killed_and_restarted_under_two_replicas(
    own_backend: Backend,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a = gateway_procs(own_backend.url, FAULT_CONFIG)
    b = gateway_procs(own_backend.url, FAULT_CONFIG)
    runner = await clients(a.url)
    app = await clients(b.url, auth={"appSessionId": APP_1})
    await register(runner, "r-before")
    beats.start(runner, "r-before")
    await pair(app, runner, "r-before")
    await relay_both_ways(app, runner, APP_1, "r-before", "before")
    await beats.stop()

    own_backend.stop()  # SIGKILL: connections refused, data gone
    times = await check_store_events_unavailable(
        runner,
        app,
        [
            ("runner:heartbeat", {"runnerId": "r-before"}),
            ("runner:output", {"data": "lost"}),
            ("runner:register", {"runnerId": "r-before"}),
        ],
    )
    # A new app connects while the store is down (its announcement fails quietly).
    late = await clients(a.url, auth={"appSessionId": APP_2})
    ack, took = await timed_call(late, "app:status", {})
    assert unavailable(ack) and took < ACK_BOUND_S
    await check_not_ready(a, b)
    print(
        "\nacks while Redis is down (s): "
        + ", ".join(f"{e} {t:.3f}" for e, t in sorted(times.items()))
    )

    own_backend.start()  # same ports, empty
    restarted = time.monotonic()
    await asyncio.gather(wait_ready(a, timeout=10), wait_ready(b, timeout=10))
    print(f"both replicas ready {time.monotonic() - restarted:.2f}s after Redis restarted")

    # The sockets from before the restart: Redis lost everything, so the runner's heartbeat
    # re-claims it and the two pair again; the fan-out listeners must have resubscribed the
    # rooms these sockets joined before the restart (they join nothing new here).
    assert await runner.call("runner:heartbeat", {"runnerId": "r-before"}) == {"success": True}
    beats.start(runner, "r-before")
    assert (await app.call("app:status"))["paired"] is False
    await pair(app, runner, "r-before")  # pairing:paired travels B -> A
    await relay_both_ways(app, runner, APP_1, "r-before", "after")

    # New sockets after the restart, the other way round: runner on B, app on A.
    runner2 = await clients(b.url)
    app2 = await clients(a.url, auth={"appSessionId": APP_3})
    await register(runner2, "r-after")
    beats.start(runner2, "r-after")
    await pair(app2, runner2, "r-after")
    await relay_both_ways(app2, runner2, APP_3, "r-after", "new")
    # The app that connected during the outage works too.
    assert (await late.call("app:status"))["success"] is True

    for gw in (a, b):
        assert gw.proc is not None and gw.proc.poll() is None
        assert bad_log_lines(gw) == []


async def test_redis_frozen_then_resumed_keeps_pairings(
    own_backend: Backend,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    a = gateway_procs(own_backend.url, FAULT_CONFIG)
    b = gateway_procs(own_backend.url, FAULT_CONFIG)
    runner = await clients(a.url)
    app = await clients(b.url, auth={"appSessionId": APP_1})
    interval_s = (await register(runner, "r-frozen"))["heartbeatIntervalMs"] / 1000
    beats.start(runner, "r-frozen")
    await pair(app, runner, "r-frozen")
    await relay_both_ways(app, runner, APP_1, "r-frozen", "before")
    # A frozen Redis runs the commands queued on its sockets when it resumes, so a heartbeat
    # sent during the freeze would land late and refresh the runner; with the store
    # unreachable over the network it would be lost. Model the latter: no heartbeats (and
    # no runner:register) while frozen.
    await beats.stop()

    pids = own_backend.freeze()  # accepts connections, answers nothing
    try:
        frozen_at = time.monotonic()
        times = await check_store_events_unavailable(
            runner, app, [("runner:output", {"data": "lost"})]
        )
        await check_not_ready(a, b)
        frozen_for = time.monotonic() - frozen_at
        print(
            "\nacks while Redis is frozen (s): "
            + ", ".join(f"{e} {t:.3f}" for e, t in sorted(times.items()))
        )
    finally:
        own_backend.thaw(pids)
    resumed = time.monotonic()
    await asyncio.gather(wait_ready(a), wait_ready(b))
    print(
        f"frozen {frozen_for:.1f}s; both replicas ready {time.monotonic() - resumed:.2f}s "
        "after it resumed"
    )
    assert frozen_for > TEST_CONFIG["heartbeat"]["timeout_s"]
    # The runner was connected all along and heartbeats on its own schedule, up to one
    # interval after the store came back; the sweepers must not have judged it dead
    # for the heartbeats the outage swallowed.
    await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - resumed)))
    assert await runner.call("runner:heartbeat", {"runnerId": "r-frozen"}) == {"success": True}
    beats.start(runner, "r-frozen")

    # Nothing was lost and the runner never left: the pairing and the relay are intact.
    assert await app.call("app:status") == paired_online("r-frozen")
    # The output whose ack said UNAVAILABLE may still have been relayed: the frozen Redis ran
    # the relay script it had already received when it resumed (at most once).
    held = app.pending("terminal:output")
    assert held <= 1
    if held:
        assert await app.next("terminal:output") == {"runnerId": "r-frozen", "data": "lost"}
    await relay_both_ways(app, runner, APP_1, "r-frozen", "after")
    assert app.pending("pairing:unpaired") == 0
    for gw in (a, b):
        assert bad_log_lines(gw) == []


async def test_redis_killed_during_a_burst(
    own_backend: Backend,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    n = 200
    a = gateway_procs(own_backend.url, FAULT_CONFIG)
    b = gateway_procs(own_backend.url, FAULT_CONFIG)
    runner = await clients(a.url)
    app = await clients(b.url, auth={"appSessionId": APP_1})
    await register(runner, "r-burst")
    beats.start(runner, "r-burst")
    await pair(app, runner, "r-burst")

    commands = await emit_unacked(app, "app:command", ({"data": i} for i in range(n)))
    outputs = await emit_unacked(runner, "runner:output", ({"data": i} for i in range(n)))
    first = await collect(runner, "terminal:input", 20)
    own_backend.stop()
    command_acks = await asyncio.wait_for(asyncio.gather(*commands), 60)
    output_acks = await asyncio.wait_for(asyncio.gather(*outputs), 60)

    went_through = {}
    for name, acks, ok in (
        ("commands", command_acks, {"success": True}),
        ("outputs", output_acks, {"success": True, "delivered": 1}),
    ):
        # Each ack is a success or UNAVAILABLE, and no success follows a failure: the
        # stream may be cut, but it has no holes.
        cut = next((i for i, ack in enumerate(acks) if ack != ok), n)
        assert all(unavailable(ack) for ack in acks[cut:]), acks[cut:]
        went_through[name] = cut
    n_commands = went_through["commands"]
    assert n_commands >= 20
    inputs = [m["data"] for m in first]
    while runner.pending("terminal:input"):
        inputs.append((await runner.next("terminal:input"))["data"])
    assert inputs == list(range(len(inputs))) and len(inputs) <= n_commands
    outs = []
    while app.pending("terminal:output"):
        outs.append((await app.next("terminal:output"))["data"])
    assert outs == list(range(len(outs))) and len(outs) <= went_through["outputs"]
    print(f"\nburst of {n} commands and {n} outputs; went through: {went_through}")

    for gw in (a, b):
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"
        assert (await get_status(gw.url + "/healthz"))[0] == 200
        assert bad_log_lines(gw) == [], "an exception escaped"


async def test_a_backlog_behind_a_frozen_store_does_not_cost_the_connection(
    own_backend: Backend, gateway_procs: Start
) -> None:
    """Events wait on the store off the socket's read loop, so pings are still answered.

    With the test timings (ping interval 1 s + timeout 1 s, store timeout 1 s), six queued
    heartbeats take about 6 s to fail: a server that handled them in the read loop would
    drop the client after about 2 s and never ack the rest.
    """
    gw = gateway_procs(own_backend.url)
    runner = await Client(reconnection=False).connect(gw.url)
    gone = watch_disconnect(runner)
    try:
        await register(runner, "r-backlog")
        pids = own_backend.freeze()
        try:
            futures = await emit_unacked(
                runner, "runner:heartbeat", [{"runnerId": "r-backlog"}] * 6
            )
            acks = await asyncio.wait_for(asyncio.gather(*futures), 30)
        finally:
            own_backend.thaw(pids)
        assert all(unavailable(ack) for ack in acks), acks
        assert not gone.is_set(), "the server dropped a client whose events were waiting"
        assert runner.sio.connected
        assert await runner.call("runner:heartbeat", {"runnerId": "r-backlog"}) == {"success": True}
    finally:
        await runner.close()
