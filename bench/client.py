"""A lean Socket.IO v5 / Engine.IO v4 client over aiohttp websockets, for load generation.

It speaks only what the benchmark needs, on the websocket transport, default namespace:

- the server opens with ``0{"sid":..,"pingInterval":..}``; the client sends ``40`` (or
  ``40{auth}``) and the server answers ``40{"sid":..}`` (``44{..}`` refuses the connection);
- events are ``42["name",arg]``, with an ack id ``42<id>["name",arg]``; acks come back as
  ``43<id>[arg]``;
- the server pings with ``2`` and the client answers ``3``.

One reader task per connection decodes frames with msgspec and hands server events to
async handlers, awaited in order on that reader (so a runner can answer ``terminal:input``
from its handler without a task per message). No reconnection, no polling, no binary events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

EventHandler = Callable[[Any], Awaitable[None]]

_PATH = "/socket.io/?EIO=4&transport=websocket"


class ProtocolError(Exception):
    """The server said something this client does not expect."""


class ConnectRefused(Exception):
    """The server answered the namespace connect with ``44`` (connect_error)."""


class Closed(Exception):
    """The connection closed while a call waited for its ack."""


def ws_url(base_url: str) -> str:
    """``http://host:port`` -> ``ws://host:port/socket.io/?EIO=4&transport=websocket``."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + _PATH


class LeanClient:
    """One Socket.IO connection; ``call`` emits with an ack and returns the ack's argument."""

    __slots__ = (
        "_ack_callbacks",
        "_acks",
        "_closed",
        "_handlers",
        "_next_id",
        "_reader",
        "_ws",
        "ping_interval_ms",
        "pings",
        "sid",
    )

    def __init__(self) -> None:
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._ack_callbacks: dict[int, Callable[[Any], None]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._next_id = 0
        self._closed = False
        self.sid = ""
        self.ping_interval_ms = 0
        self.pings = 0

    def on(self, event: str, handler: EventHandler) -> None:
        """Run ``handler(arg)`` for each server event ``event`` (awaited on the reader)."""
        self._handlers[event] = handler

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed

    async def connect(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        auth: dict[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> LeanClient:
        ws = await session.ws_connect(
            ws_url(base_url),
            autoping=True,
            autoclose=True,
            max_msg_size=0,
            compress=0,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
        )
        self._ws = ws
        try:
            async with asyncio.timeout(timeout):
                opening = await self._receive_text(ws)
                if not opening.startswith("0"):
                    raise ProtocolError(f"expected an Engine.IO open packet, got {opening[:80]!r}")
                info = _decode(opening[1:])
                self.ping_interval_ms = int(info.get("pingInterval", 0))
                hello = b"40" if auth is None else b"40" + _encode(auth)
                await ws.send_frame(hello, aiohttp.WSMsgType.TEXT)
                while True:
                    reply = await self._receive_text(ws)
                    if reply == "2":  # a ping can come first on a slow connect
                        await ws.send_frame(b"3", aiohttp.WSMsgType.TEXT)
                        continue
                    break
        except BaseException:
            await ws.close()
            self._ws = None
            raise
        if reply.startswith("44"):
            await ws.close()
            self._ws = None
            raise ConnectRefused(reply[2:])
        if not reply.startswith("40"):
            await ws.close()
            self._ws = None
            raise ProtocolError(f"expected a namespace connect ack, got {reply[:80]!r}")
        self.sid = str(_decode(reply[2:]).get("sid", "")) if len(reply) > 2 else ""
        self._reader = asyncio.create_task(self._read(ws))
        return self

    @staticmethod
    async def _receive_text(ws: aiohttp.ClientWebSocketResponse) -> str:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ProtocolError(f"expected a text frame, got {msg.type!r}")
        return str(msg.data)

    async def call(self, event: str, data: Any = None) -> Any:
        """Emit ``event`` with ``data`` and an ack id; return the ack's first argument."""
        ws = self._ws
        if ws is None or self._closed:
            raise Closed("not connected")
        self._next_id += 1
        ack_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        body = _encode([event] if data is None else [event, data])
        try:
            await ws.send_frame(b"42%d%b" % (ack_id, body), aiohttp.WSMsgType.TEXT)
            return await future
        finally:
            self._acks.pop(ack_id, None)

    async def emit(self, event: str, data: Any = None) -> None:
        """Emit without an ack."""
        ws = self._ws
        if ws is None or self._closed:
            raise Closed("not connected")
        body = _encode([event] if data is None else [event, data])
        await ws.send_frame(b"42" + body, aiohttp.WSMsgType.TEXT)

    async def emit_with_ack(
        self, event: str, data: Any = None, callback: Callable[[Any], None] | None = None
    ) -> None:
        """Emit asking for an ack without waiting for it; ``callback(ack)`` runs on arrival."""
        ws = self._ws
        if ws is None or self._closed:
            raise Closed("not connected")
        self._next_id += 1
        if callback is not None:
            self._ack_callbacks[self._next_id] = callback
        body = _encode([event] if data is None else [event, data])
        await ws.send_frame(b"42%d%b" % (self._next_id, body), aiohttp.WSMsgType.TEXT)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        acks = self._acks
        callbacks = self._ack_callbacks
        handlers = self._handlers
        text = aiohttp.WSMsgType.TEXT
        try:
            async for msg in ws:
                if msg.type is not text:
                    continue
                data: str = msg.data
                kind = data[:2]
                if kind == "43":
                    bracket = data.index("[", 2)
                    ack_id = int(data[2:bracket])
                    future = acks.get(ack_id)
                    if future is not None:
                        if not future.done():
                            args = _decode(data[bracket:])
                            future.set_result(args[0] if args else None)
                    elif callbacks:
                        callback = callbacks.pop(ack_id, None)
                        if callback is not None:
                            args = _decode(data[bracket:])
                            callback(args[0] if args else None)
                elif kind == "42":
                    bracket = data.index("[", 2)
                    args = _decode(data[bracket:])
                    handler = handlers.get(args[0]) if args else None
                    if handler is not None:
                        await handler(args[1] if len(args) > 1 else None)
                elif data == "2":
                    self.pings += 1
                    await ws.send_frame(b"3", text)
                elif kind == "41" or data == "1":
                    break
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self._closed = True
            for future in acks.values():
                if not future.done():
                    future.set_exception(Closed("connection closed"))

    async def close(self) -> None:
        ws = self._ws
        if ws is None:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await ws.send_frame(b"41", aiohttp.WSMsgType.TEXT)
        with contextlib.suppress(Exception):
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        self._ws = None


def new_session(limit: int = 0) -> aiohttp.ClientSession:
    """A ClientSession for many websocket connections (no per-host limit)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(connector=connector)
