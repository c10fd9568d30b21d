"""python-engineio's server, with the lean socket and queue and Engine.IO v4's answers."""

from __future__ import annotations

import functools
from typing import Any

import engineio
from aiohttp.web import WebSocketResponse
from engineio import packet
from engineio.async_drivers import aiohttp as engineio_aiohttp
from engineio.async_socket import AsyncSocket
from engineio.payload import Payload

from gateway.engine import refusals
from gateway.engine.queue import LeanQueue
from gateway.engine.socket import LeanSocket, close_websocket


class _WebSocket(engineio_aiohttp.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket, negotiating permessage-deflate only when configured.

    aiohttp's ``WebSocketResponse`` accepts the extension whenever a client offers it (the
    official clients, browsers and most mobile stacks do): a zlib compressor and
    decompressor held for the life of every connection, and deflate on every small frame.
    """

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size,
            compress=self.server.websocket_compression,
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def _send_handshake(socket: Any, pkt: Any) -> None:
    """A new socket's first send, its OPEN packet: the timings in exact milliseconds.

    engineio announces ``int(interval + grace) * 1000``, truncating any fractional interval
    (0.3 s is announced as 0, 2.5 s as 2000) and ``int(timeout * 1000)`` (4.35 s as 4349),
    so clients would time the connection out early.
    """
    del socket.send  # every later send is the class's own
    if pkt.packet_type == packet.OPEN and isinstance(pkt.data, dict):
        server = socket.server
        pkt.data["pingInterval"] = _ms(server.ping_interval + server.ping_interval_grace_period)
        pkt.data["pingTimeout"] = _ms(server.ping_timeout)
    await socket.send(pkt)


class _SocketTable(dict[str, Any]):
    """engineio's sid -> socket dict, handing every new socket the lean class."""

    def __setitem__(self, sid: str, socket: Any) -> None:
        if type(socket) is AsyncSocket:
            socket.__class__ = LeanSocket
            # engineio's connect sends the OPEN packet right after this; an instance
            # attribute for that one send leaves the class's send (the hot path) untouched
            socket.send = functools.partial(_send_handshake, socket)
        super().__setitem__(sid, socket)


#: Methods an Engine.IO v4 server answers; any other is a 400 (engineio: 405, or aiohttp's
#: own 405 for methods without a route).
_METHODS = frozenset({"GET", "POST", "OPTIONS"})


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with ``LeanSocket``, ``LeanQueue``, no monitor task, and the
    Engine.IO v4 answers where python-engineio differs (bad methods, redundant websockets)."""

    _async: dict[str, Any]  # the async driver's table of functions and classes
    #: Outgoing bytes allowed to wait for one connection (socketio.max_buffered_bytes).
    max_buffered_bytes: int = 4_194_304
    #: Called when a connection is cut for exceeding it (a metric).
    on_slow_reader: Any = None
    #: Called with the kind of every refused input (``refusals.KINDS``; a metric).
    on_protocol_error: Any = None
    #: Proxies whose X-Forwarded-For names the client (the address refusals are logged under).
    trusted_proxies: Any = ()

    def __init__(self, *args: Any, websocket_compression: bool = False, **kwargs: Any) -> None:
        # Each LeanSocket times out on its own timer; engineio's monitor task would wake
        # len(sockets) times per ping timeout, each wake a wait_for, to find the same.
        kwargs["monitor_clients"] = False
        super().__init__(*args, **kwargs)
        # engineio drops a whole long-polling POST that carries more than 16 packets
        # (``Payload.max_decode_packets``), but socket.io-client batches every packet queued
        # while a POST is in flight, bounded only by the payload size: an app emitting 17
        # commands in a burst over polling lost all of them. Bound the count by the byte
        # limit instead (a packet takes at least 2 bytes), as websocket frames already are.
        Payload.max_decode_packets = max(Payload.max_decode_packets, self.max_http_buffer_size // 2)
        self.websocket_compression = websocket_compression
        self.sockets = _SocketTable()
        # the driver's table is shared by every server of the process: replace, not mutate
        self._async = {**self._async, "websocket": _WebSocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> LeanQueue:
        return LeanQueue()

    async def send_text(self, sid: str, text: str) -> None:
        """engineio's ``send`` of a text message, written through when nothing waits."""
        socket = self.sockets.get(sid)
        if socket is None or socket.closed:
            return  # engineio's send_packet: the socket is not available
        await socket.send_text(text)

    def attach(self, app: Any, engineio_path: str = "engine.io") -> None:
        """engineio's routes (GET, POST, OPTIONS), and every other method to the server too."""
        super().attach(app, engineio_path)
        path = "/" + engineio_path.strip("/") + "/"
        app.router.add_route("*", path, self.handle_request)

    async def handle_request(self, request: Any) -> Any:
        """engineio's request handling, answering as Engine.IO v4 specifies where it differs.

        A missing ``transport`` (engineio assumes polling) or a method other than GET, POST
        and OPTIONS is a 400; a websocket for a session already upgraded is accepted and
        closed (engineio answers 400, which a websocket client takes for an error).
        """
        refusals.current_client.set(refusals.client_of(request, self.trusted_proxies))
        method = request.method
        if method != "OPTIONS":
            query = request.query
            if method not in _METHODS or "transport" not in query:
                message = "Invalid transport" if method in _METHODS else "Bad request method"
                refusals.refused(self, refusals.BAD_REQUEST, message, method)
                environ = self._async["translate_request"](request)
                return await self._make_response(self._bad_request(message), environ)
            sid = query.get("sid")
            if sid is not None:
                socket = self.sockets.get(sid)
                if socket is not None and socket.closed:
                    # Closed (a client's close, a bad packet) but not yet dropped: a session
                    # that is gone. engineio's POST would raise KeyError from _get_socket
                    # for it, a 500.
                    del self.sockets[sid]
            if sid is not None and request.headers.get("Upgrade", "").lower() == "websocket":
                socket = self.sockets.get(sid)
                if socket is not None and socket.upgraded:
                    return await close_websocket({"aiohttp.request": request})
        return await super().handle_request(request)

    def _log_error_once(self, message: str, message_key: str) -> None:
        """engineio's log of a refused request (at ERROR the first time): a refusal instead."""
        kind = refusals.ENGINEIO_KEYS.get(message_key, refusals.BAD_REQUEST)
        refusals.refused(self, kind, "refused an Engine.IO request", message)
