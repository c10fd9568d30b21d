"""relay.require_e2e: a gateway that promises never to carry plaintext, and the pairings
metric by mode. Clients that do not encrypt work unchanged when the option is off."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from tests.support.events import SLOW_HEARTBEAT, app_id, assert_error, pair, register
from tests.support.gateways import merged

#: An E2E record's first bytes (magic, version, DATA), then opaque bytes: the gateway reads
#: no further than the prefix.
RECORD = b"\xe2\x01\x10" + bytes(range(64))
HELLO = b"\xe2\x01\x01" + bytes(16)


async def _paired(start_gateway: Any, clients: Any, tag: str, config: dict[str, Any]) -> Any:
    gw = await start_gateway(merged(SLOW_HEARTBEAT, config))
    runner = await clients(gw.url)
    me = app_id(tag)
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, f"r-{tag}"))["pairingCode"])
    return gw, runner, app, me


async def _metric(url: str, mode: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    match = re.search(rf'^gateway_pairings_by_mode_total\{{mode="{mode}"\}} (\S+)$', text, re.M)
    assert match is not None, text
    return float(match.group(1))


NOT_RECORDS: list[Any] = [
    "ls -la",
    {"exit": 0},
    b"plain bytes",
    b"\xe2",
    b"\xe2\x01",  # the prefix alone is no frame
    b"\xe2\x02\x10" + bytes(64),  # another version
    [b"\xe2\x01\x10"],
    None,
]


@pytest.mark.parametrize("data", NOT_RECORDS, ids=repr)
async def test_require_e2e_refuses_plaintext_both_ways(
    start_gateway: Any, clients: Any, data: Any
) -> None:
    _, runner, app, me = await _paired(
        start_gateway, clients, "req-e2e", {"relay": {"require_e2e": True}}
    )
    ack = await app.call("app:command", {"data": data})
    assert_error(ack, "INVALID_PAYLOAD")
    assert "relay.require_e2e" in ack["message"]
    ack = await runner.call("runner:output", {"data": data, "appSessionId": me})
    assert_error(ack, "INVALID_PAYLOAD")
    assert_error(await app.call("app:resize", {"cols": 80, "rows": 24}), "INVALID_PAYLOAD")
    # Records pass, byte for byte, both ways.
    assert await app.call("app:command", {"data": RECORD}) == {"success": True}
    got = await runner.next("terminal:input")
    assert (got["appSessionId"], got["data"]) == (me, RECORD)
    ack = await runner.call("runner:output", {"data": RECORD, "appSessionId": me})
    assert ack == {"success": True, "delivered": 1}
    assert (await app.next("terminal:output"))["data"] == RECORD


async def test_plain_clients_work_unchanged_by_default(start_gateway: Any, clients: Any) -> None:
    _, runner, app, me = await _paired(start_gateway, clients, "plain-ok", {})
    assert await app.call("app:command", {"data": "ls"}) == {"success": True}
    assert (await runner.next("terminal:input"))["data"] == "ls"
    assert await app.call("app:resize", {"cols": 80, "rows": 24}) == {"success": True}
    ack = await runner.call("runner:output", {"data": {"exit": 0}, "appSessionId": me})
    assert ack == {"success": True, "delivered": 1}


async def test_pairings_are_counted_by_mode_once(start_gateway: Any, clients: Any) -> None:
    gw, runner, app, _ = await _paired(start_gateway, clients, "mode-e2e", {})
    assert await _metric(gw.url, "e2e") == 0 and await _metric(gw.url, "plain") == 0
    for data in (HELLO, b"\xe2\x01\x03" + bytes(96), "not counted again"):
        assert await app.call("app:command", {"data": data}) == {"success": True}
    assert await _metric(gw.url, "e2e") == 1
    assert await _metric(gw.url, "plain") == 0
    # A second pairing, plain this time.
    other = await clients(gw.url, auth={"appSessionId": app_id("mode-plain")})
    await pair(other, (await register(runner, "r-mode-e2e"))["pairingCode"])
    assert await other.call("app:command", {"data": "ls"}) == {"success": True}
    assert await _metric(gw.url, "plain") == 1
    assert await _metric(gw.url, "e2e") == 1
