"""A newer socket on another replica gets what the older one's replica relayed meanwhile.

Until the older socket's replica has handled the takeover (the ``evict`` from the newer
socket's replica), it still delivers the room's messages to the older socket without
publishing them. A resuming socket whose replay read the hold before some of them were
relayed would never get those: the older replica's ``moved`` notice makes the newer one read
the hold again. Here the older replica's handling of the evict is held back on purpose, so
the relays fall in exactly that window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.app import FANOUT, GATEWAY
from tests.support.events import app_id, pair, register
from tests.support.gateways import Client

RUNNER = "r-takeover"


def hold_evicts(gw: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """(reached, release): the replica's handling of a remote evict waits for ``release``."""
    fanout = gw.app[FANOUT]
    reached, release = asyncio.Event(), asyncio.Event()
    evicted = fanout._evicted

    async def held(room: str, sids: set[str]) -> None:
        if sids:
            reached.set()
            await release.wait()
        await evicted(room, sids)

    fanout._evicted = held
    return reached, release


async def settled(gw: Any) -> None:
    """The replica's replays (background tasks) have finished."""
    while tasks := list(gw.app[GATEWAY]._background):
        await asyncio.gather(*tasks)


async def seqs(client: Client, event: str, n: int) -> list[tuple[int, Any]]:
    got = [await asyncio.wait_for(client.raw[event].get(), 10) for _ in range(n)]
    return [(m["seq"], m["data"]) for m in got]


async def test_a_resumed_app_gets_what_the_old_replica_relayed_meanwhile(
    start_gateway: Callable[..., Awaitable[Any]], clients: Callable[..., Awaitable[Client]]
) -> None:
    a, b = await start_gateway(), await start_gateway()
    app = app_id("takeover")
    runner = await clients(a.url)
    code = (await register(runner, RUNNER))["pairingCode"]
    old = await clients(a.url, auth={"appSessionId": app})
    await pair(old, code)
    for i in range(1, 4):
        assert await runner.call("runner:output", {"data": f"o{i}"}) == {
            "success": True,
            "delivered": 1,
        }
    assert await seqs(old, "terminal:output", 3) == [(1, "o1"), (2, "o2"), (3, "o3")]

    reached, release = hold_evicts(a)
    new = await clients(b.url, auth={"appSessionId": app, "lastSeq": 3})
    await reached.wait()
    await settled(b)  # its replay read the hold: nothing after 3 yet
    for i in range(4, 7):  # a still has the old socket: delivered there, not published
        assert await runner.call("runner:output", {"data": f"o{i}"}) == {
            "success": True,
            "delivered": 1,
        }
    release.set()
    assert await seqs(new, "terminal:output", 3) == [(4, "o4"), (5, "o5"), (6, "o6")]
    await runner.call("runner:output", {"data": "o7"})
    assert await seqs(new, "terminal:output", 1) == [(7, "o7")]
    assert new.pending("terminal:gap") == 0


async def test_a_resumed_runner_gets_what_the_old_replica_relayed_meanwhile(
    start_gateway: Callable[..., Awaitable[Any]], clients: Callable[..., Awaitable[Client]]
) -> None:
    a, b = await start_gateway(), await start_gateway()
    app_session = app_id("takeover-in")
    old = await clients(a.url)
    code = (await register(old, RUNNER))["pairingCode"]
    app = await clients(a.url, auth={"appSessionId": app_session})
    await pair(app, code)
    for i in range(1, 4):
        assert await app.call("app:command", {"data": f"c{i}"}) == {"success": True}
    assert await seqs(old, "terminal:input", 3) == [(1, "c1"), (2, "c2"), (3, "c3")]

    reached, release = hold_evicts(a)
    new = await clients(b.url)
    await register(new, RUNNER, lastSeq={app_session: 3})
    await reached.wait()
    for i in range(4, 7):  # a still has the old runner: delivered there, not published
        assert await app.call("app:command", {"data": f"c{i}"}) == {"success": True}
    release.set()
    assert await seqs(new, "terminal:input", 3) == [(4, "c4"), (5, "c5"), (6, "c6")]
    await app.call("app:command", {"data": "c7"})
    assert await seqs(new, "terminal:input", 1) == [(7, "c7")]
    assert new.pending("terminal:gap") == 0
