"""python-socketio's AsyncServer, hardened against hostile input and run one inbox per socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio import packet

from gateway.addresses import parse_networks
from gateway.config import Settings
from gateway.engine import refusals
from gateway.engine.codec import MsgspecJSON
from gateway.engine.engineio_server import LeanEngineIOServer
from gateway.engine.packets import CONNECT_HEADER, EVENT_HEADER, dumps, parse_event, plain
from gateway.engine.recovery import ConnectionRecovery, RecoveringManager
from gateway.protocol import ErrorCode, error_ack

log = logging.getLogger("gateway.server")

#: Events queued per connection before its reads pause.
MAX_PENDING_EVENTS = 256
#: Binary attachments one Socket.IO packet may announce (the contract's events carry one
#: binary value each; python-socketio accepts up to 10 digits' worth).
MAX_ATTACHMENTS = 64
#: Longest a disconnect waits for the connection's queued events.
DISCONNECT_DRAIN_S = 5.0


class _Inbox:
    __slots__ = ("pending", "task")

    def __init__(self) -> None:
        #: (sid, namespace, ack id, data): the sid the event arrived for, so an event is
        #: never handled for a later connection of the same socket to the namespace.
        self.pending: deque[tuple[str, str, int | None, Any]] = deque()
        self.task: asyncio.Task[None] | None = None


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """Guarantees an ack for every event that asked for one, whatever it carried.

    Stock python-socketio would hand an event named ``connect`` or ``disconnect`` to those
    handlers, fail on a non-string name, and let a malformed packet escape into
    python-engineio's logs; here all of those end in INVALID_PAYLOAD or a dropped packet.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inboxes: dict[str, _Inbox] = {}
        #: Called with the sid once a connection's CONNECT has been sent (resume replays).
        self.after_connect: Callable[[str], Awaitable[None]] | None = None
        #: Handles every event of the default namespace: (event, sid, args) -> the ack's
        #: argument. Without it, events go to python-socketio's handlers (``on``).
        self.event_handler: Callable[[str, str, tuple[Any, ...]], Awaitable[Any]] | None = None
        #: Connection state recovery (``build_server`` with it on gives a RecoveringManager).
        self.recovery: ConnectionRecovery | None = None

    def _engineio_server_class(self) -> type[LeanEngineIOServer]:
        return LeanEngineIOServer

    def slim_environ(self, sid: str) -> None:
        """After connect, keep only what later needs of the handshake's WSGI environ.

        python-socketio holds that dict (every request header, twice over) for the life of
        the connection; only the aiohttp request is used afterwards (shutdown cuts its
        transport). Cleared in place, since python-engineio's handler holds the same dict.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        environ = self.environ.get(eio_sid)
        if environ is not None:
            request = environ.get("aiohttp.request")
            environ.clear()
            environ["aiohttp.request"] = request

    def cut_transports(self) -> None:
        """Close every connection's transport at once, without a close handshake."""
        for environ in list(self.environ.values()):
            request = environ.get("aiohttp.request")
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.close()

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        """A CONNECT to a namespace the server does not serve: CONNECT_ERROR with an object.

        Socket.IO v5's CONNECT_ERROR payload is ``{"message": ...}`` (socket.io-client reads
        the error's message from it); python-socketio sends the bare string
        ``"Unable to connect"``. The message is Node's, so clients see the same text. A
        connection that is made then runs the ``after_connect`` hook.
        """
        namespace = namespace or "/"
        if not self._serves(namespace):
            refusals.refused(
                self.eio, refusals.CONNECT, "a CONNECT to an unknown namespace", namespace
            )
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    packet.CONNECT_ERROR,
                    data={"message": "Invalid namespace"},
                    namespace=namespace,
                ),
            )
            return
        recovery = self.recovery
        given = None
        if recovery is not None and isinstance(self.manager, RecoveringManager):
            given = await self._restorable(eio_sid, recovery, data)
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            if given is not None and recovery is not None:
                self.manager.take_back(eio_sid)
                recovery.settled(given)
        hook = self.after_connect
        if hook is not None:
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None and self.manager.is_connected(sid, namespace):
                await hook(sid)

    async def _restorable(
        self, eio_sid: str, recovery: ConnectionRecovery, auth: Any
    ) -> str | None:
        """The sid this CONNECT restores, given to the manager; an older connection of the
        session still here (its end not noticed yet) is disconnected first."""
        sid = await recovery.restorable(auth)
        if sid is None:
            return None
        if self.manager.eio_sid_from_sid(sid, "/") is not None:
            await self.disconnect(sid, namespace="/")
        self.manager.give_sid(eio_sid, sid)
        return sid

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        """python-socketio's send, with CONNECT_ERROR's payload always an object and, with
        connection state recovery, a CONNECT reply carrying the connection's pid.

        python-socketio refuses a second CONNECT to a namespace with the bare string
        ``"Unable to connect"``; Socket.IO v5 (and socket.io-client, which reads the error's
        message from it) wants ``{"message": ...}``.
        """
        if pkt.packet_type == packet.CONNECT_ERROR and isinstance(pkt.data, str):
            refusals.refused(self.eio, refusals.CONNECT, "a refused CONNECT", pkt.data)
            pkt.data = {"message": pkt.data}
        recovery = self.recovery
        if recovery is not None and pkt.packet_type == packet.CONNECT:
            data = pkt.data
            if isinstance(data, dict) and isinstance(data.get("sid"), str):
                pid = recovery.pid_of(data["sid"])
                if pid is not None:
                    pkt.data = {**data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)

    def _serves(self, namespace: str) -> bool:
        """python-socketio's own test, in its ``_handle_connect``, for a namespace it serves."""
        return bool(
            namespace in self.handlers
            or namespace in self.namespace_handlers
            or self.namespaces == "*"
            or namespace in self.namespaces
        )

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: Any
    ) -> None:
        if (
            not isinstance(data, list)
            or not data
            or not isinstance(data[0], str)
            or data[0] in self.reserved_events
        ):
            if id is not None:
                ack = error_ack(ErrorCode.INVALID_PAYLOAD, "the event name must be a string")
                await self._send_packet(
                    eio_sid,
                    self.packet_class(packet.ACK, namespace=namespace or "/", id=id, data=[ack]),
                )
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return  # as python-socketio: not (or no longer) in the namespace
        inbox = self._inboxes.get(eio_sid)
        if inbox is None:
            inbox = self._inboxes[eio_sid] = _Inbox()
        inbox.pending.append((sid, namespace, id, data))
        if inbox.task is None:
            inbox.task = asyncio.create_task(self._drain(eio_sid, inbox))
        elif len(inbox.pending) >= MAX_PENDING_EVENTS:
            # Backpressure: a client that floods waits (its reads pause) for its backlog.
            await asyncio.shield(inbox.task)

    async def _drain(self, eio_sid: str, inbox: _Inbox) -> None:
        """Handle one connection's events in arrival order, off its reading loop.

        Order is the contract's (a terminal is a byte stream), and the reading loop stays
        free to answer pings: a slow store never makes a busy client miss its ping timeout.
        """
        try:
            while inbox.pending:
                sid, namespace, id, data = inbox.pending.popleft()
                if not self.manager.is_connected(sid, namespace):
                    continue  # it left (or was evicted) after this event arrived
                try:
                    handler = self.event_handler
                    if handler is None or namespace != "/":
                        await self._handle_event_internal(self, sid, eio_sid, data, namespace, id)
                        continue
                    ack = await handler(data[0], sid, tuple(data[1:]))
                    if id is not None:
                        await self._send_ack(eio_sid, id, ack)
                except Exception:
                    log.exception("event handling failed")
        finally:
            inbox.task = None
            if not inbox.pending and self._inboxes.get(eio_sid) is inbox:
                del self._inboxes[eio_sid]

    async def _send_ack(self, eio_sid: str, id: int, ack: Any) -> None:
        """An ACK of the default namespace, as ``_handle_event_internal`` sends it.

        Encoded here when it holds JSON types only (the acks the gateway builds): without
        python-socketio's packet objects and their search for binary data.
        """
        args = [] if ack is None else list(ack) if isinstance(ack, tuple) else [ack]
        if plain(args):
            await self.eio.send_text(eio_sid, f"{packet.ACK}{id}{dumps(args)}")
        else:
            await self._send_packet(
                eio_sid, self.packet_class(packet.ACK, namespace="/", id=id, data=args)
            )

    async def emit_to(self, sid: str, event: str, data: Any) -> None:
        """``emit(event, data, to=sid)`` in the default namespace, encoded here when it can be.

        python-socketio's emit goes through its manager: a packet object, a search for
        binary data, and a task per recipient, for what is here one socket.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return  # not (or no longer) connected, as the manager finds no participant
        args = [str(event) if isinstance(event, str) else event, data]  # a StrEnum: its value
        if plain(args):
            await self.eio.send_text(eio_sid, f"{packet.EVENT}{dumps(args)}")
        else:
            await self.emit(event, data, to=sid)

    async def emit_with_offset(self, sid: str, event: str, data: Any, offset: str) -> None:
        """``emit_to`` with the event's recovery offset as its last argument."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        args = [str(event), data, offset]
        if plain(args):
            await self.eio.send_text(eio_sid, f"{packet.EVENT}{dumps(args)}")
        else:
            await self.emit(event, (data, offset), to=sid)

    async def _settle(self, eio_sid: str) -> None:
        """Wait (bounded) for the events that arrived before a disconnect."""
        inbox = self._inboxes.get(eio_sid)
        task = inbox.task if inbox is not None else None
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), DISCONNECT_DRAIN_S)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        await self._settle(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _handle_disconnect(
        self, eio_sid: str, namespace: str | None, reason: Any = None
    ) -> None:
        """A client's namespace disconnect ("41") comes after the events it sent before."""
        await self._settle(eio_sid)
        await super()._handle_disconnect(eio_sid, namespace, reason)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        pending = self._binary_packet.get(eio_sid)
        if pending is None and type(data) is str and data[:1] == "2":
            event = parse_event(data)
            if event is not None:
                await self._handle_event(eio_sid, "/", event[0], event[1])
                return
        if pending is not None and self._attachments_too_large(pending, data):
            await self._drop_binary(eio_sid, pending, "binary attachments over max_payload_bytes")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
            started = self._binary_packet.get(eio_sid)
            if started is not None and started.attachment_count > MAX_ATTACHMENTS:
                await self._drop_binary(
                    eio_sid, started, "a packet announcing too many attachments"
                )
        except Exception:
            refusals.refused(
                self.eio, refusals.SOCKETIO_PACKET, "dropped a malformed Socket.IO packet", data
            )
            if pending is not None:
                if self._binary_packet.get(eio_sid) is not pending:
                    return  # the packet was complete: whatever failed, it was handled
                # A bad attachment: drop the half-built packet, or every later packet of
                # this client would be taken for one of its attachments.
                del self._binary_packet[eio_sid]
                if pending.packet_type == packet.BINARY_EVENT:
                    await self._ack_unparsed(eio_sid, pending.namespace, pending.id)
            elif (
                isinstance(data, str)
                and (match := CONNECT_HEADER.match(data))
                and not self._parses(data)
            ):
                # A CONNECT whose payload does not parse: CONNECT_ERROR, so the client does
                # not wait for its own timeout (python-socketio answers nothing).
                await self._send_packet(
                    eio_sid,
                    self.packet_class(
                        packet.CONNECT_ERROR,
                        data={"message": "Invalid connection payload"},
                        namespace=match["ns"] or "/",
                    ),
                )
            elif (
                isinstance(data, str)
                and (match := EVENT_HEADER.match(data))
                and not self._parses(data)
            ):
                # An event whose body did not parse (bad JSON, nested too deeply for the
                # decoder) still names its ack id: answer it, unless it was handled.
                await self._ack_unparsed(eio_sid, match["ns"], int(match["id"]))

    def _attachments_too_large(self, pending: Any, data: Any) -> bool:
        """Whether this attachment takes a half-built packet past ``max_payload_bytes``.

        python-socketio collects attachments until the count the header announced: a
        header announcing a billion, then frame after frame, would grow without bound.
        """
        size = len(data) if isinstance(data, str | bytes) else 0
        size += sum(len(a) for a in pending.attachments if isinstance(a, str | bytes))
        return bool(size > self.eio.max_http_buffer_size)

    async def _drop_binary(self, eio_sid: str, pkt: Any, what: str) -> None:
        """Drop a half-built binary packet; an event that asked for an ack gets
        INVALID_PAYLOAD (later packets are packets again, not attachments)."""
        refusals.refused(self.eio, refusals.SOCKETIO_PACKET, what, pkt.attachment_count)
        if self._binary_packet.get(eio_sid) is pkt:
            del self._binary_packet[eio_sid]
        if pkt.packet_type == packet.BINARY_EVENT:
            await self._ack_unparsed(eio_sid, pkt.namespace, pkt.id)

    def _parses(self, data: str) -> bool:
        try:
            self.packet_class(encoded_packet=data)
        except Exception:
            return False
        return True

    async def _handle_ack(self, eio_sid: str, namespace: str | None, id: int, data: Any) -> None:
        """An ACK from the client: refused (counted, rate-limited) unless the server asked.

        python-socketio logs a WARNING for every ack it has no callback for, unthrottled: a
        client sending ``43<n>[]`` in a loop would fill the log.
        """
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        if id not in self.manager.callbacks.get(sid, ()):
            refusals.refused(
                self.eio, refusals.SOCKETIO_PACKET, "an ack the server did not ask for", id
            )
            return
        await super()._handle_ack(eio_sid, namespace, id, data)

    async def _ack_unparsed(self, eio_sid: str, namespace: str | None, id: int | None) -> None:
        if id is None:
            return
        ack = error_ack(ErrorCode.INVALID_PAYLOAD, "the packet could not be parsed")
        try:
            await self._send_packet(
                eio_sid,
                self.packet_class(packet.ACK, namespace=namespace or "/", id=id, data=[ack]),
            )
        except Exception as exc:
            log.info("could not ack a malformed packet", extra={"error": repr(exc)[:200]})


def build_server(
    settings: Settings,
    *,
    on_slow_reader: Callable[[], None] | None = None,
    on_protocol_error: Callable[[str], None] | None = None,
) -> GatewayServer:
    """The server as ``settings.socketio`` configures it; ``on_slow_reader`` is called for
    every connection cut for exceeding ``max_buffered_bytes``, ``on_protocol_error`` with the
    kind of every refused input (``refusals.KINDS``)."""
    sio_cfg = settings.socketio
    server = GatewayServer(
        # Connection state recovery restores sessions under their old sid.
        client_manager=RecoveringManager() if sio_cfg.connection_state_recovery else None,
        async_mode="aiohttp",
        json=MsgspecJSON,
        # Handlers run inline in each connection's own drain task (GatewayServer._drain):
        # one event at a time per connection, in arrival order, without blocking its reads.
        async_handlers=False,
        ping_interval=sio_cfg.ping_interval_s,
        ping_timeout=sio_cfg.ping_timeout_s,
        max_http_buffer_size=sio_cfg.max_payload_bytes,
        websocket_compression=sio_cfg.websocket_compression,
        cors_allowed_origins=sio_cfg.cors_allowed_origins,
        # Logger objects, not False: given False, python-socketio and python-engineio add a
        # StreamHandler of their own, a second (plain text) copy of every line they log.
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )
    server.eio.max_buffered_bytes = sio_cfg.max_buffered_bytes
    server.eio.on_slow_reader = on_slow_reader
    server.eio.on_protocol_error = on_protocol_error
    server.eio.trusted_proxies = parse_networks(settings.trusted_proxies)
    return server
