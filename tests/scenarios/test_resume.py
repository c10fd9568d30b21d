"""Resume after a lost network: seq numbers, the hold, replay, gaps.

The multi-replica tests put a freezing TCP proxy (tests.support.freeze_proxy) between one client and
its gateway: the client's network stops without a close, as a phone's does when it changes
networks, while its peer keeps streaming. The client then reconnects (on its new network,
to the same or the other replica) with lastSeq, while its peer keeps streaming: every
message after lastSeq arrives exactly once, in order, seq contiguous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from pairing.store import Redis
from tests.support.gateways import Client, GatewayProcess, emit_unacked
from tests.support.redis_server import RedisProcess
from tests.support.replicas import Heartbeats, pair, register

APP = "resume-app-0123456789abcdef"
RID = "r-resume"
Connect = Callable[..., Any]

#: Long enough that nothing times out on its own during a test: the runner stays online
#: while its network is frozen, and a frozen connection is still open when its client
#: comes back (a takeover, not a disconnect, ends it).
CLUSTER = {
    "heartbeat": {"interval_s": 0.5, "timeout_s": 20, "ttl_s": 40},
    "socketio": {"ping_interval_s": 10, "ping_timeout_s": 10},
}


async def raw(client: Client, event: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The next ``n`` ``event``s as they came, seq included."""

    async def take() -> list[dict[str, Any]]:
        return [await client.raw[event].get() for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


def drain(client: Client, event: str) -> list[dict[str, Any]]:
    out = []
    while not client.raw[event].empty():
        out.append(client.raw[event].get_nowait())
    return out


async def all_acked(futures: list[asyncio.Future[Any]], expected: Any) -> None:
    assert await asyncio.wait_for(asyncio.gather(*futures), 30) == [expected] * len(futures)


async def nothing_more(client: Client, event: str, wait_s: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(client.raw[event].get(), wait_s)
        pytest.fail(f"unexpected {event}: {extra}")


def outputs(first: int, last: int) -> list[dict[str, str]]:
    return [{"data": f"o{i}"} for i in range(first, last + 1)]


def commands(first: int, last: int) -> list[dict[str, str]]:
    return [{"data": f"c{i}"} for i in range(first, last + 1)]


@pytest.mark.parametrize("where", ["same replica", "other replica"])
async def test_app_resumes_after_its_network_froze(
    where: str,
    redis_proc: RedisProcess,
    redis: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Connect,
    beats: Heartbeats,
    proxies: Callable[[int], Any],
) -> None:
    a, b = gateway_procs(redis_proc.url, CLUSTER), gateway_procs(redis_proc.url, CLUSTER)
    runner = await clients(a.url)
    await register(runner, RID)
    beats.start(runner, RID)
    proxy = await proxies(a.port)
    old = await clients(proxy.url, auth={"appSessionId": APP})
    await pair(old, runner, RID)

    await all_acked(
        await emit_unacked(runner, "runner:output", outputs(1, 100)),
        {"success": True, "delivered": 1},
    )
    got = await raw(old, "terminal:output", 100)
    assert [m["seq"] for m in got] == list(range(1, 101))
    assert got[0] == {"runnerId": RID, "data": "o1", "seq": 1}

    proxy.freeze()
    # The runner streams 300 more into the frozen network; it is not slowed: acks come.
    await all_acked(
        await emit_unacked(runner, "runner:output", outputs(101, 400)),
        {"success": True, "delivered": 1},
    )
    last = max([100] + [m["seq"] for m in drain(old, "terminal:output")])
    assert last == 100  # frozen: nothing got through

    # The app comes back on its new network while the runner keeps streaming.
    live = asyncio.create_task(emit_unacked(runner, "runner:output", outputs(401, 600)))
    target = a if where == "same replica" else b
    new = await clients(target.url, auth={"appSessionId": APP, "lastSeq": last})
    await all_acked(await live, {"success": True, "delivered": 1})
    got = await raw(new, "terminal:output", 600 - last)
    assert [m["seq"] for m in got] == list(range(last + 1, 601))
    assert [m["data"] for m in got] == [f"o{i}" for i in range(last + 1, 601)]
    await nothing_more(new, "terminal:output")
    assert new.pending("terminal:gap") == 0
    proxy.cut()


async def test_runner_resumes_on_the_other_replica_after_its_network_froze(
    redis_proc: RedisProcess,
    redis: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Connect,
    beats: Heartbeats,
    proxies: Callable[[int], Any],
) -> None:
    a, b = gateway_procs(redis_proc.url, CLUSTER), gateway_procs(redis_proc.url, CLUSTER)
    app = await clients(a.url, auth={"appSessionId": APP})
    proxy = await proxies(b.port)
    old = await clients(proxy.url)
    await pair(app, old, RID)
    beats.start(old, RID)

    await all_acked(await emit_unacked(app, "app:command", commands(1, 100)), {"success": True})
    got = await raw(old, "terminal:input", 100)
    assert [m["seq"] for m in got] == list(range(1, 101))
    assert got[0] == {"appSessionId": APP, "data": "c1", "seq": 1}

    proxy.freeze()
    await all_acked(await emit_unacked(app, "app:command", commands(101, 400)), {"success": True})
    last = max([100] + [m["seq"] for m in drain(old, "terminal:input")])

    # The runner registers again, on the other replica, while the app keeps typing.
    live = asyncio.create_task(emit_unacked(app, "app:command", commands(401, 600)))
    new = await clients(a.url)
    ack = await new.call("runner:register", {"runnerId": RID, "lastSeq": {APP: last}})
    assert ack["success"] is True, ack
    beats.start(new, RID)
    await all_acked(await live, {"success": True})
    got = await raw(new, "terminal:input", 600 - last)
    assert [m["seq"] for m in got] == list(range(last + 1, 601))
    assert [m["data"] for m in got] == [f"c{i}" for i in range(last + 1, 601)]
    assert {m["appSessionId"] for m in got} == {APP}
    await nothing_more(new, "terminal:input")
    assert new.pending("terminal:gap") == 0
    proxy.cut()


# -- one replica (in-process) ------------------------------------------------------------


async def test_without_last_seq_nothing_is_replayed_and_seq_continues(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    for i in range(1, 4):
        await runner.call("runner:output", {"data": f"o{i}"})
    assert [m["seq"] for m in await raw(app, "terminal:output", 3)] == [1, 2, 3]
    await app.close()

    again = await clients(gw.url, auth={"appSessionId": APP})
    await nothing_more(again, "terminal:output")
    assert await runner.call("runner:output", {"data": "o4"}) == {"success": True, "delivered": 1}
    assert await raw(again, "terminal:output", 1) == [{"runnerId": RID, "data": "o4", "seq": 4}]


async def test_last_seq_replays_exactly_what_is_newer(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    for i in range(1, 11):
        await runner.call("runner:output", {"data": f"o{i}"})
    await raw(app, "terminal:output", 10)
    await app.close()

    for last, expected in ((7, [8, 9, 10]), (10, []), (0, list(range(1, 11)))):
        again = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": last})
        got = await raw(again, "terminal:output", len(expected)) if expected else []
        assert [m["seq"] for m in got] == expected
        assert [m["data"] for m in got] == [f"o{s}" for s in expected]
        await nothing_more(again, "terminal:output", 0.3)
        await again.close()


async def test_binary_data_is_held_as_binary(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    blob = bytes(range(256))
    await runner.call("runner:output", {"data": blob})
    assert (await raw(app, "terminal:output", 1))[0]["data"] == blob
    await app.close()
    again = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": 0})
    assert await raw(again, "terminal:output", 1) == [{"runnerId": RID, "data": blob, "seq": 1}]


async def test_a_gap_says_what_the_hold_no_longer_has(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway({"resume": {"max_messages": 50}})
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    await app.close()
    await all_acked(
        await emit_unacked(runner, "runner:output", outputs(1, 200)),
        {"success": True, "delivered": 1},
    )
    again = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": 10})
    assert await again.next("terminal:gap") == {"fromSeq": 11, "toSeq": 150, "missed": 140}
    got = await raw(again, "terminal:output", 50)
    assert [m["seq"] for m in got] == list(range(151, 201))
    assert again.pending("terminal:gap") == 0


async def test_the_hold_keeps_the_newest_within_its_bytes(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway({"resume": {"max_bytes": 10_000}})
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    await app.close()
    for i in range(1, 31):
        await runner.call("runner:output", {"data": f"{i:04d}" + "x" * 996})
    again = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": 0})
    gap = await again.next("terminal:gap")
    held = 30 - gap["missed"]
    assert gap["fromSeq"] == 1 and 5 <= held < 10, gap  # ~1 KiB each, 10,000 bytes in all
    got = await raw(again, "terminal:output", held)
    assert [m["seq"] for m in got] == list(range(31 - held, 31))


async def test_seq_continues_across_re_pairing_and_counts_each_direction(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    r1, r2 = await clients(gw.url), await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, r1, "r-one")
    await r1.call("runner:output", {"data": "a"})
    await app.call("app:command", {"data": "x"})
    await pair(app, r2, "r-two")
    await r2.call("runner:output", {"data": "b"})
    await app.call("app:command", {"data": "y"})
    assert [m["seq"] for m in await raw(app, "terminal:output", 2)] == [1, 2]
    assert [m["seq"] for m in await raw(r1, "terminal:input", 1)] == [1]
    assert await raw(r2, "terminal:input", 1) == [{"appSessionId": APP, "data": "y", "seq": 2}]


async def test_the_hold_can_be_off(start_gateway: Callable[..., Any], clients: Connect) -> None:
    gw = await start_gateway({"resume": {"max_messages": 0}})
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    await runner.call("runner:output", {"data": "a"})
    assert [m["seq"] for m in await raw(app, "terminal:output", 1)] == [1]
    await app.close()
    await runner.call("runner:output", {"data": "b"})
    again = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": 1})
    assert await again.next("terminal:gap") == {"fromSeq": 2, "toSeq": 2, "missed": 1}


async def test_runner_resume_only_for_its_own_apps(
    start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    runner, other = await clients(gw.url), await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP})
    stranger = await clients(gw.url, auth={"appSessionId": "stranger-0123456789abcdef"})
    await pair(app, runner, RID)
    await pair(stranger, other, "r-other")
    for i in range(1, 4):
        await app.call("app:command", {"data": f"c{i}"})
        await stranger.call("app:command", {"data": f"s{i}"})
    await raw(runner, "terminal:input", 3)
    again = await clients(gw.url)
    ack = await again.call(
        "runner:register",
        {"runnerId": RID, "lastSeq": {APP: 1, "stranger-0123456789abcdef": 0}},
    )
    assert ack["success"] is True
    got = await raw(again, "terminal:input", 2)
    assert [(m["data"], m["seq"]) for m in got] == [("c2", 2), ("c3", 3)]
    await nothing_more(again, "terminal:input", 0.3)


@pytest.mark.parametrize("last_seq", [-1, "5", 1.5, True, [1], {"n": 1}, 2**64])
async def test_a_malformed_last_seq_refuses_the_connection(
    last_seq: Any, start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await clients(gw.url, auth={"appSessionId": APP, "lastSeq": last_seq})
    # null is "no lastSeq": accepted, like a missing one
    ok = await clients(gw.url, auth={"appSessionId": APP, "lastSeq": None})
    assert (await ok.call("app:status"))["success"] is True


@pytest.mark.parametrize("last_seq", [{APP: -1}, {APP: "1"}, {"bad": 1}, [1], 3])
async def test_a_malformed_runner_last_seq_is_invalid_payload(
    last_seq: Any, start_gateway: Callable[..., Any], clients: Connect
) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    ack = await runner.call("runner:register", {"runnerId": RID, "lastSeq": last_seq})
    assert ack["error"] == "INVALID_PAYLOAD", ack
