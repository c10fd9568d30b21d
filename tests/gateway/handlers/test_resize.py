"""app:resize -> terminal:resize, and binary terminal data across replicas.

A remote terminal needs the app's window size at the runner (for the pseudo-terminal's
TIOCSWINSZ) and bytes relayed unchanged both ways, wherever each end is connected.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.events import (
    SLOW_HEARTBEAT,
    app_id,
    assert_error,
    pair,
    quiet,
    register,
    stale_heartbeat,
)
from tests.support.gateways import emit_unacked


async def _paired(start_gateway, clients, runner_id: str, *, replicas: int = 1):
    """A runner on the first replica and an app paired with it on the last."""
    gws = [await start_gateway(SLOW_HEARTBEAT) for _ in range(replicas)]
    runner = await clients(gws[0].url)
    me = app_id(runner_id)
    app = await clients(gws[-1].url, auth={"appSessionId": me})
    await pair(app, (await register(runner, runner_id))["pairingCode"])
    return runner, app, me


@pytest.mark.parametrize("replicas", [1, 2])
async def test_resize_reaches_the_runner(start_gateway, clients, replicas: int) -> None:
    runner, app, me = await _paired(start_gateway, clients, f"r-size-{replicas}", replicas=replicas)
    assert await app.call("app:resize", {"cols": 132, "rows": 43}) == {"success": True}
    assert await runner.next("terminal:resize") == {"appSessionId": me, "cols": 132, "rows": 43}
    # The range's ends are accepted; unknown fields are ignored, as everywhere.
    ack = await app.call("app:resize", {"cols": 1, "rows": 10000, "pixels": 5})
    assert ack == {"success": True}
    assert await runner.next("terminal:resize") == {"appSessionId": me, "cols": 1, "rows": 10000}


BAD_SIZES: list[Any] = [
    {"cols": 0, "rows": 24},
    {"cols": 80, "rows": 10001},
    {"cols": -1, "rows": 24},
    {"cols": 80.0, "rows": 24},
    {"cols": 80.5, "rows": 24},
    {"cols": "80", "rows": 24},
    {"cols": True, "rows": 24},
    {"cols": None, "rows": 24},
    {"cols": 80},
    {"rows": 24},
    {},
    [80, 24],
    "80x24",
    None,
]


async def test_resize_validation(start_gateway, clients) -> None:
    runner, app, me = await _paired(start_gateway, clients, "r-size-bad")
    for payload in BAD_SIZES:
        assert_error(await app.call("app:resize", payload), "INVALID_PAYLOAD")
    assert_error(await app.call("app:resize"), "INVALID_PAYLOAD")
    assert_error(await app.call("app:resize", {"cols": 80, "rows": 24}, "x"), "INVALID_PAYLOAD")
    # None of those reached the runner: the next size it gets is the next valid one.
    assert await app.call("app:resize", {"cols": 80, "rows": 24}) == {"success": True}
    assert await runner.next("terminal:resize") == {"appSessionId": me, "cols": 80, "rows": 24}
    await quiet(runner, "terminal:resize")


async def test_resize_not_paired_runner_offline_wrong_role(start_gateway, clients, redis) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    size = {"cols": 80, "rows": 24}
    lonely = await clients(gw.url, auth={"appSessionId": app_id("size-lonely")})
    assert_error(await lonely.call("app:resize", size), "NOT_PAIRED")
    anon = await clients(gw.url)
    assert_error(await anon.call("app:resize", size), "NOT_PAIRED")

    runner = await clients(gw.url)
    me = app_id("size-off")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-size-off"))["pairingCode"])
    assert_error(await runner.call("app:resize", size), "WRONG_ROLE")
    await stale_heartbeat(redis, "r-size-off")
    assert_error(await app.call("app:resize", size), "RUNNER_OFFLINE")
    assert await runner.call("runner:heartbeat", {"runnerId": "r-size-off"}) == {"success": True}
    assert await app.call("app:resize", {"cols": 100, "rows": 30}) == {"success": True}
    # Only the accepted size reached the runner.
    assert await runner.next("terminal:resize") == {"appSessionId": me, "cols": 100, "rows": 30}
    await quiet(runner, "terminal:resize")


async def test_resize_keeps_its_place_among_keystrokes(start_gateway, clients) -> None:
    """A resize between keystrokes reaches the runner between them (one ordered path)."""
    runner, app, me = await _paired(start_gateway, clients, "r-size-order", replicas=2)
    sent: list[tuple[str, Any]] = []
    for i in range(60):
        sent.append(("app:command", {"data": f"k{i}"}))
        if i % 3 == 0:
            sent.append(("app:resize", {"cols": 10 + i, "rows": 5 + i}))
    acks = []  # emitted without waiting for acks, as a terminal types
    for event, payload in sent:
        acks += await emit_unacked(app, event, [payload])
    assert await asyncio.wait_for(asyncio.gather(*acks), 10) == [{"success": True}] * len(sent)
    inputs = [(await runner.next("terminal:input"))["data"] for _ in range(60)]
    sizes = [await runner.next("terminal:resize") for _ in range(20)]
    assert inputs == [f"k{i}" for i in range(60)]
    assert sizes == [{"appSessionId": me, "cols": 10 + i, "rows": 5 + i} for i in range(0, 60, 3)]


#: What a pseudo-terminal produces and a keyboard sends: any byte, UTF-8 cut mid-character.
BLOBS = [
    bytes(range(256)),
    "é✓中".encode()[:4],
    b"\x1b[?1049h\x1b[H\x1b[2J",
    b"\x00" * 70000,
]


async def test_binary_relay_is_byte_exact_across_replicas(start_gateway, clients) -> None:
    runner, app, me = await _paired(start_gateway, clients, "r-bin", replicas=2)
    for blob in BLOBS:
        assert await app.call("app:command", {"data": blob}) == {"success": True}
        got = await runner.next("terminal:input")
        assert got["appSessionId"] == me and got["data"] == blob and type(got["data"]) is bytes
        ack = await runner.call("runner:output", {"data": blob, "appSessionId": me})
        assert ack == {"success": True, "delivered": 1}
        out = await app.next("terminal:output")
        assert out["data"] == blob and type(out["data"]) is bytes, out
