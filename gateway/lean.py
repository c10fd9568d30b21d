"""python-engineio, adapted: every use of its internals is in this module.

(python-socketio's are in ``gateway.server.GatewayServer``; tests/test_upstream_engine.py
fails, naming the method, when an upgrade changes one of the upstream methods these replace
or rely on.)

Leaner per-connection objects, for memory per idle connection.

python-engineio gives every connection an ``asyncio.Queue`` for outgoing packets: five
deques and an Event, about 3.7 KiB, most of an idle runner's Python-level footprint beside
aiohttp's own. ``LeanQueue`` is the subset of that interface engineio uses (one consumer,
the connection's writer), holding a deque only while packets wait. ``LeanSocket`` keeps one
timer per connection for pings and ping timeouts, and reads and writes its websocket
without a task or timer per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from typing import Any

import engineio
from aiohttp.web import WebSocketResponse
from engineio import exceptions, packet
from engineio.async_drivers import aiohttp as engineio_aiohttp
from engineio.async_socket import AsyncSocket
from engineio.payload import Payload


class LeanQueue:
    __slots__ = ("_getters", "_items", "_joiners", "_unfinished")

    def __init__(self, *_: Any, **__: Any) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._unfinished += 1
        getters = self._getters
        if getters:
            self._getters = None
            for fut in getters:
                if not fut.done():
                    fut.set_result(None)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._take(self._items)

    def _take(self, items: deque[Any]) -> Any:
        item = items.popleft()
        if not items:
            self._items = None  # an idle connection holds no deque
        return item

    async def get(self) -> Any:
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(fut)
            try:
                await fut
            finally:
                if self._getters is not None and fut in self._getters:
                    self._getters.remove(fut)
        return self._take(self._items)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for fut in joiners:
                if not fut.done():
                    fut.set_result(None)

    async def join(self) -> None:
        while self._unfinished > 0:
            fut = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(fut)
            await fut


#: Sockets ending on a missed pong, held until they have ended.
_expiring: set[asyncio.Task[None]] = set()


class LeanSocket(AsyncSocket):  # type: ignore[misc]
    """An engineio socket that keeps no task, timer or coroutine per message or per wait.

    Stock python-engineio reads a websocket through ``ensure_future`` plus ``wait_for`` for
    every message (two tasks and a timer handle each, alive while the connection idles),
    writes through a ``wait_for`` that times out, pings from a sleeping task, and finds
    dead clients with one server-wide task that wakes ``len(sockets)`` times per ping
    timeout. Here one timer per socket does all of it: ping due, then pong overdue, which
    ends the socket (PING_TIMEOUT) and cuts its transport. The reader and the writer wait
    without timeouts, since that timer ends them.
    """

    last_ping: float | None
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool
    _timer: asyncio.TimerHandle | None = None
    _ws: Any = None
    #: Bytes of outgoing packets not yet written to the transport (queued or in a batch).
    _out_bytes: int = 0

    async def send(self, pkt: Any) -> None:
        """engineio's send, counting what waits; a reader too slow for it is cut off."""
        await super().send(pkt)
        self._out_bytes += _size(pkt)
        limit = self.server.max_buffered_bytes
        if self._out_bytes > limit and not (self.closing or self.closed):
            on_cut = self.server.on_slow_reader
            if on_cut is not None:
                on_cut()
            task = asyncio.ensure_future(self._cut())
            _expiring.add(task)
            task.add_done_callback(_expiring.discard)

    async def _cut(self) -> None:
        """As a network failure: abort the transport, end the socket (its client reconnects)."""
        self._abort_transport()
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_ERROR)
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    def _abort_transport(self) -> None:
        request = getattr(self._ws, "environ", {}).get("aiohttp.request")
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abort()

    def _written(self, packets: list[Any]) -> None:
        self._out_bytes -= sum(_size(p) for p in packets)

    async def poll(self) -> list[Any]:
        """Packets for a long-polling GET: engineio's poll without ``wait_for``."""
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await self.queue.get()
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            # closed without a close packet (the client sent one): the GET still ends with
            # a packet, a noop, as Engine.IO v4 servers answer (engineio answers empty)
            return [packet.Packet(packet.NOOP)]
        packets = self._batch(first)
        self._written(packets)
        return packets

    async def _next_packets(self) -> list[Any]:
        """Packets for the websocket writer: waits until there are some (or the close)."""
        first = await self.queue.get()
        self.queue.task_done()
        return self._batch(first)

    def _batch(self, first: Any) -> list[Any]:
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    # the ping cycle -------------------------------------------------------------------------

    def schedule_ping(self) -> None:
        if self.last_ping:  # only after the previous ping was answered, as engineio does
            self.last_ping = None
            self._arm(self.server.ping_interval, self._ping_due)

    def _arm(self, delay: float, callback: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _ping_due(self) -> None:
        self._timer = None
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        self.queue.put_nowait(packet.Packet(packet.PING))
        self._arm(self.server.ping_timeout, self._pong_overdue)

    def _pong_overdue(self) -> None:
        self._timer = None
        if self.last_ping is not None and not (self.closing or self.closed):
            task = asyncio.ensure_future(self._expire())
            _expiring.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_expiring.discard)

    async def _expire(self) -> None:
        """The client missed its pong: end the socket and its transport, as Node does."""
        await self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
        ws = self._ws
        if ws is not None:
            # A dead peer will not answer a close handshake; aiohttp would wait 10 s for it.
            request = getattr(ws, "environ", {}).get("aiohttp.request")
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.close()
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """engineio's close, which also ends the transport's waits (they have no timeout)."""
        if self.closing or self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await super().close(wait=wait, abort=abort, reason=reason)
        self.queue.put_nowait(None)  # a waiting poll or websocket writer returns

    # the upgrade ----------------------------------------------------------------------------

    _upgrade_settled: asyncio.Future[None] | None = None
    #: Longest a polling GET that arrives after the probe waits for the upgrade's outcome:
    #: Node's engine.io flushes a noop to such a GET every 100 ms. The client sends ``5``
    #: only once its in-flight GET has returned, so this wait must stay short.
    upgrade_poll_hold_s = 0.1

    async def handle_get_request(self, environ: dict[str, Any]) -> Any:
        """engineio's GET, with the Engine.IO v4 answers around an upgrade.

        A second websocket for a session that is already upgrading is accepted and closed
        (engineio would wait for its probe forever). A polling GET that comes once the probe
        is answered waits briefly for the upgrade's outcome: 400 once upgraded (the
        session's only transport is the websocket), a normal poll if the upgrade failed,
        engineio's noop if it is still under way.
        """
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            if self.upgrading or self.upgraded:
                return await close_websocket(environ)
        elif self._upgrade_settled is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.upgrade_poll_hold_s):
                    await asyncio.shield(self._upgrade_settled)
            if self.upgraded:
                return self.server._bad_request("Unexpected HTTP request")
        return await super().handle_get_request(environ)

    def _settle_upgrade(self) -> None:
        settled, self._upgrade_settled = self._upgrade_settled, None
        if settled is not None and not settled.done():
            settled.set_result(None)

    # the websocket transport ----------------------------------------------------------------

    async def _receive_frame(self, ws: Any) -> Any:
        data = await ws.wait()
        if data and len(data) > self.server.max_http_buffer_size:
            raise ValueError("packet is too large")
        return data

    async def _websocket_handler(self, ws: Any) -> None:
        """engineio's websocket handler, reading inline instead of through two tasks."""
        if self.connected:
            # the socket was already connected over polling: this is an upgrade
            self.upgrading = True  # hold packet sends during the upgrade
            try:
                pkt = packet.Packet(encoded_packet=await self._receive_frame(ws))
            except Exception:
                self.upgrading = False
                return
            if pkt.packet_type != packet.PING or pkt.data != "probe":
                self.upgrading = False
                return
            await ws.send(packet.Packet(packet.PONG, data="probe").encode())
            await self.queue.put(packet.Packet(packet.NOOP))  # end the pending poll
            self._upgrade_settled = asyncio.get_running_loop().create_future()
            try:
                pkt = packet.Packet(encoded_packet=await self._receive_frame(ws))
            except Exception:
                self.upgrading = False
                self._settle_upgrade()
                return
            if pkt.packet_type != packet.UPGRADE:
                self.upgraded = False
                self.upgrading = False
                self._settle_upgrade()
                return
            self.upgraded = True
            self.upgrading = False
            self._settle_upgrade()
        else:
            self.connected = True
            self.upgraded = True

        self._ws = ws
        self._transport = getattr(ws.environ.get("aiohttp.request"), "transport", None)
        writer_task = asyncio.ensure_future(self._write_websocket(ws))
        on_message = self.server.handlers.get("message")
        while True:
            try:
                data = await self._receive_frame(ws)
                if data is None:
                    break  # closed by the client
                if (
                    on_message is not None
                    and type(data) is str
                    and data[:1] == "4"
                    and "0" <= data[1:2] <= "9"
                ):
                    # A MESSAGE carrying a Socket.IO packet: engineio's decode tries the text
                    # after the "4" as JSON, refuses it (it starts with a digit) and keeps the
                    # text, which receive() hands to this same handler.
                    await self._on_message(on_message, data[1:])
                    if self.closed:
                        break
                    continue
                pkt = packet.Packet(encoded_packet=data)
            except (Exception, asyncio.CancelledError):
                # closed, broken, oversized or undecodable: the connection ends, as in
                # engineio (and Node's engine.io, which closes on a parse error)
                break
            try:
                await self.receive(pkt)
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
            if self.closed:
                break  # an Engine.IO close from the client, or the server closed it
        self._ws = self._transport = None
        self.queue.put_nowait(None)  # unlock the writer so it can exit
        await writer_task
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _on_message(self, handler: Any, data: str) -> None:
        """engineio's run of the message handler (inline, errors logged, never raised)."""
        try:
            await handler(self.sid, data)
        except Exception:
            self.server.logger.exception("message async handler error")

    async def _write_websocket(self, ws: Any) -> None:
        sock = ws._sock
        while True:
            packets = await self._next_packets()
            if not packets:
                break  # the close marker
            self._writing = True
            try:
                for pkt in packets:
                    encoded = pkt.encode()
                    if type(encoded) is str:
                        await sock.send_str(encoded)
                    else:
                        await sock.send_bytes(encoded)
                    self._out_bytes -= _size(pkt)
            except (Exception, asyncio.CancelledError):
                break
            finally:
                self._writing = False
        with contextlib.suppress(Exception):
            await ws.close()

    #: The writer task holds packets it has not written yet.
    _writing: bool = False

    def _can_write_through(self, size: int) -> bool:
        """Whether a packet may go to the transport now, ahead of the writer task.

        Only when nothing waits before it (the queue is empty, the writer holds nothing, the
        transport has nothing buffered) and it is small: aiohttp then writes it without
        awaiting anything (no drain, no compression in an executor), so it cannot overtake
        a packet, block its sender on a slow reader, or escape ``max_buffered_bytes``.
        """
        transport = self._transport
        return (
            size <= _WRITE_THROUGH_MAX
            and self._ws is not None
            and not self._writing
            and not self.queue._items
            and not self.upgrading
            and transport is not None
            and not transport.get_write_buffer_size()
        )

    _transport: Any = None

    async def send_text(self, text: str) -> None:
        """Send a MESSAGE packet of ``text``: straight to the websocket when nothing waits.

        The per-event path (acks, local emits): engineio queues every packet for the
        connection's writer task, a task switch and a packet object per message.
        """
        if self.closed:
            raise exceptions.SocketIsClosedError()
        last_ping = self.last_ping
        if (
            self._can_write_through(len(text))
            and not (last_ping and time.time() - last_ping > self.server.ping_timeout)
            and not self.closing
        ):
            with contextlib.suppress(Exception):  # a broken transport: the reader ends it
                await self._ws._sock.send_str("4" + text)
            return
        await self.send(packet.Packet(packet.MESSAGE, data=text))


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


#: Longest text written ahead of the writer task: at most 16 KiB of UTF-8, which aiohttp
#: writes (and, with compression on, compresses) without awaiting.
_WRITE_THROUGH_MAX = 4096


def _size(pkt: Any) -> int:
    """What a packet weighs in the outgoing queue (its payload; a few bytes of framing)."""
    data = pkt.data
    return len(data) + 8 if isinstance(data, str | bytes) else 16


async def close_websocket(environ: dict[str, Any]) -> WebSocketResponse:
    """Accept a websocket and close it at once, as Node's engine.io answers a redundant one."""
    ws = WebSocketResponse()
    await ws.prepare(environ["aiohttp.request"])
    await ws.close()
    return ws


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
    _async: dict[str, Any]  # the async driver's table of functions and classes
    #: Outgoing bytes allowed to wait for one connection (socketio.max_buffered_bytes).
    max_buffered_bytes: int = 4_194_304
    #: Called when a connection is cut for exceeding it (a metric).
    on_slow_reader: Any = None

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
        method = request.method
        if method != "OPTIONS":
            query = request.query
            if method not in _METHODS or "transport" not in query:
                message = "Invalid transport" if method in _METHODS else "Bad request method"
                environ = self._async["translate_request"](request)
                return await self._make_response(self._bad_request(message), environ)
            sid = query.get("sid")
            if sid is not None and request.headers.get("Upgrade", "").lower() == "websocket":
                socket = self.sockets.get(sid)
                if socket is not None and socket.upgraded:
                    return await close_websocket({"aiohttp.request": request})
        return await super().handle_request(request)
