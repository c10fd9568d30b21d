"""python-engineio's socket, without a task, timer or coroutine per message or per wait.

``LeanSocket`` keeps one timer per connection for pings and ping timeouts, reads and writes
its websocket without a task or timer per message, and cuts a reader too slow for
``max_buffered_bytes``. python-engineio creates stock sockets; ``LeanEngineIOServer``'s socket
table hands each one this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp.web import WebSocketResponse
from engineio import exceptions, packet, payload
from engineio.async_socket import AsyncSocket

from gateway.engine import refusals

#: Sockets ending on a missed pong, held until they have ended.
_expiring: set[asyncio.Task[None]] = set()

#: Engine.IO v4 packets a client may send. The server pings (a client's PING is Node's
#: "invalid heartbeat direction") and OPEN is the server's; any other type is a bad packet,
#: which ends the session as Node's engine.io ends it ("parse error").
_FROM_CLIENT = frozenset({packet.CLOSE, packet.PONG, packet.MESSAGE, packet.UPGRADE, packet.NOOP})


class _FrameTooLarge(ValueError):
    pass


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
        """engineio's close, which also ends the transport's waits (they have no timeout).

        ``wait`` waits for the queued packets (the CLOSE among them) to be taken, as engineio
        does, but bounded: on long-polling only a GET takes them, and a client that never
        polls again would otherwise hold the closing task, and the socket, forever.
        """
        if self.closing or self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await super().close(wait=False, abort=abort, reason=reason)
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                    await self.queue.join()
        self.queue.put_nowait(None)  # a waiting poll or websocket writer returns

    async def receive(self, pkt: Any) -> None:
        """engineio's receive, ignoring a NOOP (as Node does; engineio raises on it)."""
        if pkt.packet_type != packet.NOOP:
            await super().receive(pkt)

    async def _refuse(self, kind: str, what: str, detail: Any) -> None:
        """A bad packet or request from the client: counted, logged, and the session ends
        at once (its pending GET gets the CLOSE packet), never waiting on the client."""
        refusals.refused(self.server, kind, what, detail)
        await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """engineio's POST, ending the session on a bad payload instead of raising through.

        engineio lets a payload that does not decode (not UTF-8, an unknown or empty packet)
        escape as a 500 or a logged traceback, and answers a packet it does not take (a NOOP,
        a PING, an OPEN) or an oversized body by closing the socket with ``wait``, which never
        returns on long-polling: the POST hangs and the session is never freed. Here each of
        those ends the session at once and raises ``EngineIOError``, which engineio's
        ``handle_request`` answers with a 400 (the socket, already closed, is dropped).
        The body is read in full (``readexactly``; engineio's ``read(n)`` may return less).
        """
        server = self.server
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            await self._refuse(refusals.BAD_REQUEST, "a POST with a bad Content-Length", length)
            raise exceptions.EngineIOError()
        if length > server.max_http_buffer_size:
            await self._refuse(refusals.PAYLOAD_TOO_LARGE, "a POST over max_payload_bytes", length)
            raise exceptions.ContentTooLongError()
        try:
            body = await environ["wsgi.input"].readexactly(length)
        except (Exception, asyncio.CancelledError):
            # the client went away mid-body: the session ends as on a network failure
            await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_ERROR)
            raise exceptions.EngineIOError() from None
        try:
            packets = payload.Payload(encoded_payload=body.decode("utf-8")).packets
        except (ValueError, IndexError, TypeError):
            await self._refuse(refusals.ENGINEIO_PACKET, "an undecodable polling payload", body)
            raise exceptions.EngineIOError() from None
        for pkt in packets:
            if pkt.packet_type not in _FROM_CLIENT:
                await self._refuse(refusals.ENGINEIO_PACKET, "an unexpected Engine.IO packet", body)
                raise exceptions.EngineIOError()
        for pkt in packets:
            await self.receive(pkt)
            if self.closed:
                break

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
            raise _FrameTooLarge("packet is too large")
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
            except _FrameTooLarge:
                refusals.refused(
                    self.server, refusals.PAYLOAD_TOO_LARGE, "a frame over max_payload_bytes"
                )
                break
            except (Exception, asyncio.CancelledError):
                break  # closed or broken
            if data is None:
                break  # closed by the client
            try:
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
            except (Exception, asyncio.CancelledError):
                break
            try:
                pkt = packet.Packet(encoded_packet=data)
            except Exception:
                pkt = None
            if pkt is None or pkt.packet_type not in _FROM_CLIENT:
                # undecodable or not a client's packet: the connection ends, as in Node's
                # engine.io ("parse error"); engineio logged a traceback for types >= 7
                refusals.refused(
                    self.server, refusals.ENGINEIO_PACKET, "a bad Engine.IO packet", data
                )
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
