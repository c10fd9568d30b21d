"""The gateway's Engine.IO v4 / Socket.IO v5 transport, held to the protocols' rules.

Each test states the rule it checks; they talk to a real gateway (``memory://`` store)
over real sockets, with raw HTTP and websocket frames so nothing a client library does
hides what the server answered.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable

from tests.conftest import RunningGateway

StartGateway = Callable[..., Awaitable[RunningGateway]]

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
