"""The gateway's Engine.IO v4 / Socket.IO v5 transport, held to the protocols' rules.

Each test states the rule it checks; they talk to a real gateway (``memory://`` store)
over real sockets, with raw HTTP and websocket frames so nothing a client library does
hides what the server answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.engine.socket import LeanSocket
from tests.support.gateways import RunningGateway

StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture(params=["recovery off", "recovery on"])
def start_gateway(request: pytest.FixtureRequest, start_gateway: StartGateway) -> StartGateway:
    """Every rule holds with Socket.IO's connection state recovery off and on."""
    on = request.param == "recovery on"

    async def start(config: dict[str, Any] | None = None, **kwargs: Any) -> RunningGateway:
        cfg = dict(config or {})
        if on:
            cfg["socketio"] = {**cfg.get("socketio", {}), "connection_state_recovery": True}
        return await start_gateway(cfg, **kwargs)

    return start


#: What a browser or socket.io-client sends: permessage-deflate, offered.
_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


async def _upgrade_headers(gw: RunningGateway, query: str, extensions: str) -> dict[str, str]:
    """Send a websocket upgrade by hand and return the answer's status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket.io/?{query} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{gw.server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
        ).encode()
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    status, *lines = head.decode().split("\r\n")
    headers = {"status": status}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers


# -- websocket compression ------------------------------------------------------------------


async def test_websocket_compression_is_not_negotiated_by_default(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway({"redis_url": "memory://"})
    headers = await _upgrade_headers(gw, "EIO=4&transport=websocket", _DEFLATE_OFFER)
    assert " 101 " in headers["status"], headers
    assert "sec-websocket-extensions" not in headers, headers


async def test_websocket_compression_key_restores_permessage_deflate(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        {"redis_url": "memory://", "socketio": {"websocket_compression": True}}
    )
    headers = await _upgrade_headers(gw, "EIO=4&transport=websocket", _DEFLATE_OFFER)
    assert " 101 " in headers["status"], headers
    assert headers.get("sec-websocket-extensions", "").startswith("permessage-deflate"), headers


# -- Engine.IO v4 ----------------------------------------------------------------------------

_POLL = "/socket.io/?EIO=4&transport=polling"


async def _open_polling(http: aiohttp.ClientSession, gw: RunningGateway) -> str:
    async with http.get(gw.url + _POLL) as resp:
        assert resp.status == 200
        body = await resp.text()
    assert body.startswith("0{"), body
    return str(json.loads(body[1:])["sid"])


async def _ws_with_sid(http: aiohttp.ClientSession, gw: RunningGateway, sid: str) -> Any:
    url = gw.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
    return await http.ws_connect(url)


async def _next_frame(ws: Any) -> str:
    """The next text frame that is neither a ping (answered) nor a noop."""
    while True:
        frame = await ws.receive_str(timeout=10)
        if frame == "2":
            await ws.send_str("3")
        elif frame != "6":
            return str(frame)


async def test_handshake_announces_fractional_timings_in_exact_milliseconds(
    start_gateway: StartGateway,
) -> None:
    """pingInterval and pingTimeout are the configured values in ms, never truncated."""
    gw = await start_gateway(
        {"redis_url": "memory://", "socketio": {"ping_interval_s": 2.5, "ping_timeout_s": 4.35}}
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + _POLL) as resp:
            polling = json.loads((await resp.text())[1:])
        ws = await http.ws_connect(
            gw.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        )
        websocket = json.loads((await ws.receive_str(timeout=10))[1:])
        await ws.close()
    for handshake in (polling, websocket):
        assert handshake["pingInterval"] == 2500, handshake
        assert handshake["pingTimeout"] == 4350, handshake


async def test_missing_transport_or_unknown_method_is_a_400(start_gateway: StartGateway) -> None:
    """Engine.IO v4: a missing mandatory query parameter or a bad method answers 400."""
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/socket.io/?EIO=4") as resp:
            assert resp.status == 400
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            async with http.request(method, gw.url + _POLL) as resp:
                assert resp.status == 400, method
        # what a client does stays as it was: a polling handshake, a CORS preflight
        async with http.get(gw.url + _POLL) as resp:
            assert resp.status == 200
        async with http.options(gw.url + _POLL) as resp:
            assert resp.status == 200


async def test_close_packet_ends_the_pending_poll_with_a_noop(start_gateway: StartGateway) -> None:
    """A client's close packet ends its pending GET with a noop; the session is gone after."""
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        sid = await _open_polling(http, gw)
        url = gw.url + _POLL + f"&sid={sid}"
        pending = asyncio.ensure_future(http.get(url))
        await asyncio.sleep(0.2)  # the GET must be waiting on the server when the close comes
        assert not pending.done()
        async with http.post(url, data="1") as resp:
            assert resp.status == 200
        async with await asyncio.wait_for(pending, 10) as resp:
            assert resp.status == 200
            assert await resp.text() == "6"
        async with http.get(url) as resp:
            assert resp.status == 400


async def test_polling_get_during_an_upgrade_is_refused_once_upgraded(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the probe, a polling GET waits for the upgrade; once upgraded it is a 400."""
    # a long hold, so that the GET is surely waiting when the upgrade completes
    monkeypatch.setattr(LeanSocket, "upgrade_poll_hold_s", 30.0)
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        sid = await _open_polling(http, gw)
        ws = await _ws_with_sid(http, gw, sid)
        await ws.send_str("2probe")
        assert await ws.receive_str(timeout=10) == "3probe"
        url = gw.url + _POLL + f"&sid={sid}"
        poll = asyncio.ensure_future(http.get(url))
        await asyncio.sleep(0.2)
        assert not poll.done()  # not answered 200 while the upgrade is under way
        await ws.send_str("5")
        async with await asyncio.wait_for(poll, 10) as resp:
            assert resp.status == 400
        async with http.get(url) as resp:
            assert resp.status == 400
        await ws.send_str("40")  # the session lives on over the websocket
        assert (await _next_frame(ws)).startswith("40{")
        await ws.close()


async def test_polling_get_during_an_upgrade_never_holds_the_clients_pause(
    start_gateway: StartGateway,
) -> None:
    """A GET that crosses the probe's answer ends soon with a noop, not at the ping timeout.

    The client sends ``5`` only once its in-flight GET has returned: a GET held until the
    upgrade's outcome would stall the upgrade for the whole ping interval plus timeout.
    """
    gw = await start_gateway(
        {"redis_url": "memory://", "socketio": {"ping_interval_s": 25, "ping_timeout_s": 20}}
    )
    async with aiohttp.ClientSession() as http:
        sid = await _open_polling(http, gw)
        ws = await _ws_with_sid(http, gw, sid)
        await ws.send_str("2probe")
        assert await ws.receive_str(timeout=10) == "3probe"
        url = gw.url + _POLL + f"&sid={sid}"
        for _ in range(2):  # the first takes the noop queued at the probe, the second waits
            async with await asyncio.wait_for(http.get(url), 10) as resp:
                assert resp.status == 200
                assert await resp.text() == "6"
        await ws.send_str("5")
        await ws.send_str("40")
        assert (await _next_frame(ws)).startswith("40{")
        await ws.close()


async def test_polling_get_during_a_failed_upgrade_polls_as_before(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade that ends without ``5`` leaves the session on polling: the GET is served."""
    monkeypatch.setattr(LeanSocket, "upgrade_poll_hold_s", 30.0)
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        sid = await _open_polling(http, gw)
        ws = await _ws_with_sid(http, gw, sid)
        await ws.send_str("2probe")
        assert await ws.receive_str(timeout=10) == "3probe"
        url = gw.url + _POLL + f"&sid={sid}"
        poll = asyncio.ensure_future(http.get(url))
        await asyncio.sleep(0.2)
        assert not poll.done()
        await ws.send_str("4not-an-upgrade")
        async with await asyncio.wait_for(poll, 10) as resp:
            assert resp.status == 200
            assert await resp.text() == "6"  # a normal poll: the noop queued at the probe
        async with http.post(url, data="40") as resp:
            assert resp.status == 200
        async with http.get(url) as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith("40{")
        await ws.close()


async def test_a_second_websocket_for_an_upgrading_or_upgraded_session_is_closed(
    start_gateway: StartGateway,
) -> None:
    """A redundant websocket with the session's sid is closed at once, never left waiting."""
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        sid = await _open_polling(http, gw)
        first = await _ws_with_sid(http, gw, sid)  # upgrading: its probe not sent yet
        second = await _ws_with_sid(http, gw, sid)
        msg = await second.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        await first.send_str("2probe")
        assert await first.receive_str(timeout=10) == "3probe"
        await first.send_str("5")
        await first.send_str("40")
        assert (await _next_frame(first)).startswith("40{")  # upgraded
        third = await _ws_with_sid(http, gw, sid)
        msg = await third.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        # the upgraded session is untouched by both
        await first.send_str('42["ping"]')
        await first.send_str("41")
        await first.close()


# -- Socket.IO v5 ----------------------------------------------------------------------------


async def test_unknown_namespace_gets_connect_error_with_a_message_object(
    start_gateway: StartGateway,
) -> None:
    """CONNECT_ERROR's payload is an object with ``message`` (Socket.IO v5)."""
    gw = await start_gateway({"redis_url": "memory://"})
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            gw.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        )
        assert (await ws.receive_str(timeout=10)).startswith("0{")
        await ws.send_str("40/random,")
        assert await ws.receive_str(timeout=10) == '44/random,{"message":"Invalid namespace"}'
        await ws.send_str("40")  # the main namespace still connects on the same socket
        assert (await ws.receive_str(timeout=10)).startswith("40{")
        await ws.close()
