"""Hostile input gets a prompt, well-formed answer: never a hang, a 5xx, a leak or a traceback.

Engine.IO: a bad request is a 400, a bad packet closes the session (and frees it). Socket.IO:
a CONNECT that cannot be served gets CONNECT_ERROR with a ``{"message"}`` object. Each test
talks raw HTTP and websocket frames to a real gateway process (``python -m gateway``) on a
real redis-server, every read bounded, and the process's log is checked after each test: one
JSON object per line, nothing at ERROR, no traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support.fuzz import send_raw_text
from tests.support.gateways import GatewayProcess
from tests.support.hostile import (
    http_session,
    log_problems,
    open_polling,
    open_ws,
    poll,
    post,
    ws_closes,
    ws_next,
)
from tests.support.redis_server import RedisProcess

MAX_PAYLOAD = 100_000


@pytest.fixture(scope="module")
def gateway(redis_proc: RedisProcess) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        redis_proc.url,
        {"socketio": {"max_payload_bytes": MAX_PAYLOAD}, "log_level": "info"},
    )
    gw.start()
    yield gw
    gw.terminate()
    print("--- gateway log (tail) ---\n" + "\n".join(gw.log().splitlines()[-40:]))


@pytest.fixture
async def http(gateway: GatewayProcess) -> AsyncIterator[aiohttp.ClientSession]:
    """A bounded HTTP client; after the test, the gateway is alive and its log is clean."""
    async with http_session() as session:
        yield session
    assert gateway.proc is not None and gateway.proc.poll() is None, "the gateway died"
    assert not log_problems(gateway.log()), "\n".join(log_problems(gateway.log()))


async def _refused_count(http: aiohttp.ClientSession, url: str, kind: str) -> float:
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    match = re.search(rf'^gateway_protocol_errors_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


# -- Engine.IO over long-polling -------------------------------------------------------------


@pytest.mark.parametrize("body", ["2", "0", "x", "\xff", "7", "4\x1e\x1e4", "", "41\x1e"])
async def test_a_bad_polling_packet_is_a_400_and_ends_the_session(
    gateway: GatewayProcess, http: aiohttp.ClientSession, body: str
) -> None:
    """A client ping (v4 servers ping), an OPEN, an unknown type, a body that is not UTF-8
    or has an empty packet: 400 at once, and the session is gone (a later request: 400)."""
    before = await _refused_count(http, gateway.url, "engineio_packet")
    sid = await open_polling(http, gateway.url)
    raw = body.encode("latin-1") if body == "\xff" else body.encode()
    if body == "":  # an empty POST says nothing: answered, session kept
        assert await post(http, gateway.url, sid, raw) in (200, 400)
        return
    assert await post(http, gateway.url, sid, raw) == 400
    assert (await poll(http, gateway.url, sid))[0] == 400
    assert await post(http, gateway.url, sid, "40") == 400
    assert await _refused_count(http, gateway.url, "engineio_packet") > before


async def test_a_noop_post_is_answered_and_the_session_still_serves(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """A noop says nothing (Node's engine.io ignores it): 200, and the session goes on."""
    sid = await open_polling(http, gateway.url)
    assert await post(http, gateway.url, sid, "6") == 200
    assert await post(http, gateway.url, sid, "40") == 200
    status, body = await poll(http, gateway.url, sid)
    assert status == 200 and body.startswith("40{"), body


async def test_an_oversized_post_is_a_400_and_ends_the_session(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    sid = await open_polling(http, gateway.url)
    assert await post(http, gateway.url, sid, "4" + "a" * (MAX_PAYLOAD + 10)) == 400
    assert (await poll(http, gateway.url, sid))[0] == 400


async def test_a_post_after_the_clients_close_is_a_400_not_a_500(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """python-engineio keeps a session closed by a POSTed ``1`` and answers the next POST
    with a KeyError, a 500."""
    sid = await open_polling(http, gateway.url)
    assert await post(http, gateway.url, sid, "40") == 200
    assert await post(http, gateway.url, sid, "1") == 200
    assert await post(http, gateway.url, sid, "40") == 400
    assert await post(http, gateway.url, sid, '42["app:status"]') == 400
    assert (await poll(http, gateway.url, sid))[0] == 400


async def test_a_close_ends_the_pending_poll_with_a_close_and_frees_the_session(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """A bad packet while a GET waits: the GET returns at once (with the close), no hang."""
    import asyncio

    sid = await open_polling(http, gateway.url)
    assert await post(http, gateway.url, sid, "40") == 200
    status, body = await poll(http, gateway.url, sid)
    assert body.startswith("40{"), body
    waiting = asyncio.create_task(poll(http, gateway.url, sid))
    await asyncio.sleep(0.2)
    assert await post(http, gateway.url, sid, "9") == 400
    status, body = await waiting
    assert status == 200 and body.split("\x1e")[-1] in ("1", "6"), body
    assert (await poll(http, gateway.url, sid))[0] == 400


async def test_unknown_sid_and_a_nul_in_it_are_a_400_logged_escaped(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    async with http.post(gateway.url + "/socket.io/?EIO=4&transport=polling&sid=a%00b") as resp:
        assert resp.status == 400
    async with http.get(gateway.url + "/socket.io/?EIO=4&transport=polling&sid=%ff") as resp:
        assert resp.status == 400


# -- Engine.IO over websocket ----------------------------------------------------------------


@pytest.mark.parametrize("frame", ["7", "8", "9", "2", "0", "x", ""])
async def test_a_bad_websocket_packet_closes_the_connection(
    gateway: GatewayProcess, http: aiohttp.ClientSession, frame: str
) -> None:
    ws = await open_ws(http, gateway.url)
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    await ws.send_str(frame)
    assert await ws_closes(ws)
    await ws.close()


@pytest.mark.parametrize("data", [b"4\xff", b'42["\xed\xa0\x80"]', b"\xc3("])
async def test_a_websocket_text_frame_of_invalid_utf8_closes_the_connection(
    gateway: GatewayProcess, http: aiohttp.ClientSession, data: bytes
) -> None:
    ws = await open_ws(http, gateway.url)
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    await send_raw_text(ws, data)
    assert await ws_closes(ws)
    await ws.close()


async def test_a_websocket_noop_is_ignored(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, gateway.url)
    await ws.send_str("6")
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    await ws.close()


# -- Socket.IO CONNECT -----------------------------------------------------------------------


def _connect_error(frame: str | None, namespace: str = "") -> str:
    assert frame is not None, "closed without a CONNECT_ERROR"
    prefix = "44" + (namespace + "," if namespace else "")
    assert frame.startswith(prefix), frame
    body = json.loads(frame[len(prefix) :])
    assert isinstance(body, dict) and isinstance(body.get("message"), str), frame
    return str(body["message"])


async def test_a_second_connect_gets_a_connect_error_object(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, gateway.url)
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    await ws.send_str("40")
    _connect_error(await ws_next(ws))
    await ws.send_str('421["app:status"]')  # still connected once
    reply = await ws_next(ws)
    assert reply is not None and reply.startswith("431["), reply
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "namespace"),
    [("40{", ""), ("40/admin,[", "/admin"), ('40"auth"', ""), ("40/,{", ""), ("40[", "")],
)
async def test_a_malformed_connect_gets_a_connect_error(
    gateway: GatewayProcess, http: aiohttp.ClientSession, frame: str, namespace: str
) -> None:
    ws = await open_ws(http, gateway.url)
    await ws.send_str(frame)
    _connect_error(await ws_next(ws), namespace)
    await ws.send_str("40")  # the socket can still connect
    assert (await ws_next(ws) or "").startswith("40{")
    await ws.close()


async def test_a_malformed_connect_over_polling_gets_a_connect_error(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    sid = await open_polling(http, gateway.url)
    assert await post(http, gateway.url, sid, "40{") == 200
    status, body = await poll(http, gateway.url, sid)
    assert status == 200
    _connect_error(body)


async def test_acks_the_server_never_asked_for_are_refused_quietly(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """python-socketio logs a WARNING per unknown ack, unthrottled (a log flood)."""
    before = await _refused_count(http, gateway.url, "socketio_packet")
    ws = await open_ws(http, gateway.url)
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    for i in range(50):
        await ws.send_str(f'43{i}["x"]')
    await ws.send_str('421["app:status"]')  # a barrier: handled after the acks
    reply = await ws_next(ws)
    assert reply is not None and reply.startswith("431["), reply
    await ws.close()
    assert await _refused_count(http, gateway.url, "socketio_packet") >= before + 50
    assert "Unknown callback" not in gateway.log()


async def test_binary_attachments_are_bounded_in_count_and_size(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    """A header announcing a billion attachments, or attachments adding up past
    max_payload_bytes, is dropped (INVALID_PAYLOAD) instead of collected without bound."""
    ws = await open_ws(http, gateway.url)
    await ws.send_str("40")
    assert (await ws_next(ws) or "").startswith("40{")
    placeholder = '{"data":{"_placeholder":true,"num":0}}'
    await ws.send_str(f'45999999999-7["app:command",{placeholder}]')
    reply = await ws_next(ws)
    assert reply is not None and reply.startswith("437[") and "INVALID_PAYLOAD" in reply, reply
    await ws.send_str(f'452-8["app:command",{placeholder}]')
    await ws.send_bytes(b"a" * (MAX_PAYLOAD * 2 // 3))
    await ws.send_bytes(b"b" * (MAX_PAYLOAD * 2 // 3))
    reply = await ws_next(ws)
    assert reply is not None and reply.startswith("438[") and "INVALID_PAYLOAD" in reply, reply
    await ws.send_str('429["app:status"]')  # packets are packets again
    reply = await ws_next(ws)
    assert reply is not None and reply.startswith("439["), reply
    await ws.close()
