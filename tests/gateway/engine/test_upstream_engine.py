"""python-engineio and python-socketio internals that the gateway replaces or relies on.

``gateway.engine`` (python-engineio's server and socket, python-socketio's ``GatewayServer``)
overrides private methods and calls private ones. An upgrade that changes one of them can
break the gateway silently, so each is recorded here by a hash of its source, taken from
the versions in ``RECORDED_WITH``. A failure names the method: read its new source, check
what our override assumes (the reason beside each entry), then record the new hash.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version
from typing import Any

import engineio
import pytest
import socketio
from engineio.async_drivers import aiohttp as engineio_aiohttp

from gateway.engine import GatewayServer
from gateway.engine.engineio_server import LeanEngineIOServer, _WebSocket
from gateway.engine.recovery import RecoveringManager
from gateway.engine.socket import LeanSocket

#: The distributions the hashes below were taken from.
RECORDED_WITH = {"python-engineio": "4.15.1", "python-socketio": "5.18.1"}

#: qualified name -> (sha256 of its source, first 16 hex digits; what we depend on).
UPSTREAM: dict[str, tuple[str, str]] = {
    # python-engineio: gateway/engine/engineio_server.py, socket.py
    "engineio.base_server.BaseServer.__init__": (
        "a06b17502fbd9646",
        "LeanEngineIOServer.__init__: monitor_clients, self._async, self.sockets",
    ),
    "engineio.async_server.AsyncServer.attach": (
        "7874d4dc1c319bc6",
        "LeanEngineIOServer.attach adds a route for every other method beside it",
    ),
    "engineio.async_drivers.aiohttp.create_route": (
        "0bb365240a062488",
        "the GET, POST and OPTIONS routes LeanEngineIOServer.attach completes",
    ),
    "engineio.async_server.AsyncServer.handle_request": (
        "1a8c878e35166cfe",
        "LeanEngineIOServer.handle_request answers some requests before it",
    ),
    "engineio.async_server.AsyncServer._handle_connect": (
        "5bd7edc1d1ae115a",
        "_SocketTable: the socket is stored, then its first send is the OPEN packet",
    ),
    "engineio.async_server.AsyncServer.create_queue": (
        "5ff5673a0c017681",
        "LeanEngineIOServer.create_queue: LeanQueue instead",
    ),
    "engineio.async_server.AsyncServer._service_task": (
        "b6358bda51d0b34b",
        "disabled (monitor_clients=False): LeanSocket's timer does its work",
    ),
    "engineio.async_server.AsyncServer._make_response": (
        "5f883ef57e34f34c",
        "LeanEngineIOServer.handle_request's own 400s",
    ),
    "engineio.base_server.BaseServer._bad_request": (
        "af66afac6f6c67db",
        "the 400s of LeanEngineIOServer.handle_request and LeanSocket.handle_get_request",
    ),
    "engineio.async_socket.AsyncSocket.poll": (
        "826f58a9f3606db2",
        "LeanSocket.poll replaces it",
    ),
    "engineio.async_socket.AsyncSocket.receive": (
        "a91ae36ec2fb5340",
        "LeanSocket.receive wraps it (a NOOP ignored); a CLOSE closes with abort (no "
        "packet); a MESSAGE goes to the 'message' handler, which the handler calls "
        "directly; its info log indexes packet_names, so only types 0-6 may reach it",
    ),
    "engineio.async_server.AsyncServer._trigger_event": (
        "4a09b6e47eb66532",
        "LeanSocket._on_message runs the 'message' handler as this does (inline, logged)",
    ),
    "engineio.packet.Packet.decode": (
        "18e27ff7fd56addd",
        "a text MESSAGE whose body starts with a digit keeps its body as a str: "
        "LeanSocket._websocket_handler hands that body on without decoding",
    ),
    "engineio.async_server.AsyncServer.send": (
        "ff1fdb18f1c30bb3",
        "LeanEngineIOServer.send_text does what it does for a str, written through",
    ),
    "engineio.async_server.AsyncServer.send_packet": (
        "c54317440865030d",
        "LeanEngineIOServer.send_text: a missing or closed socket is skipped",
    ),
    "engineio.async_drivers.aiohttp.WebSocket.send": (
        "9acf5561b663a59f",
        "LeanSocket writes through the aiohttp WebSocketResponse (_sock) it wraps",
    ),
    "engineio.async_socket.AsyncSocket.send": (
        "0437276ccba7ab09",
        "shadowed once per socket by _send_handshake; queues through self.queue",
    ),
    "engineio.async_socket.AsyncSocket.check_ping_timeout": (
        "77616d5ca7809257",
        "runs in every send; reads last_ping, which LeanSocket's timer keeps",
    ),
    "engineio.async_socket.AsyncSocket.handle_get_request": (
        "05eaae9f0a60d9be",
        "LeanSocket.handle_get_request answers around an upgrade, then calls it",
    ),
    "engineio.async_socket.AsyncSocket.handle_post_request": (
        "82dca119a261a959",
        "LeanSocket.handle_post_request replaces it: a bad payload closes the socket (no "
        "wait) and raises EngineIOError, which handle_request answers 400",
    ),
    "engineio.async_socket.AsyncSocket.close": (
        "faa2e93902543244",
        "LeanSocket.close calls it with wait=False and waits (bounded) itself; it sends "
        "the CLOSE packet (unless abort) after the disconnect handler",
    ),
    "engineio.base_server.BaseServer._log_error_once": (
        "dccbb5602dc46a09",
        "LeanEngineIOServer._log_error_once: every refused request goes through it, "
        "keyed 'bad-sid' for an unknown session",
    ),
    "engineio.base_server.BaseServer._get_socket": (
        "ae2f99e66d632944",
        "raises KeyError for a closed socket, which handle_request's POST path does not "
        "catch (a 500): LeanEngineIOServer.handle_request drops closed sockets before it",
    ),
    "engineio.async_socket.AsyncSocket.schedule_ping": (
        "fe316639159cd70d",
        "LeanSocket.schedule_ping replaces it",
    ),
    "engineio.async_socket.AsyncSocket._send_ping": (
        "67db82a704ea49d0",
        "replaced by LeanSocket's timer (never called)",
    ),
    "engineio.async_socket.AsyncSocket._upgrade_websocket": (
        "820b83efe96adb98",
        "builds server._async['websocket'], which is _WebSocket",
    ),
    "engineio.async_socket.AsyncSocket._websocket_handler": (
        "27f120df4d717a24",
        "LeanSocket._websocket_handler replaces it",
    ),
    "engineio.async_drivers.aiohttp.WebSocket.__call__": (
        "71f9a94476d737c3",
        "_WebSocket.__call__ replaces it (compression off unless configured)",
    ),
    "engineio.async_drivers.aiohttp.WebSocket.wait": (
        "992c370917677d39",
        "LeanSocket._receive_frame: None on close, OSError on a non-data message",
    ),
    "engineio.payload.Payload.decode": (
        "9c7975664d815d3d",
        "bounded by Payload.max_decode_packets, which LeanEngineIOServer raises",
    ),
    # python-socketio: gateway/engine/socketio_server.py, packets.py
    "socketio.async_server.AsyncServer.__init__": (
        "7ae671981d87c57f",
        "GatewayServer.__init__ calls it; it hands unknown kwargs to the engine",
    ),
    "socketio.base_server.BaseServer.__init__": (
        "6b998e091b34a563",
        "self.environ (slim_environ, cut_transports), kwargs passed to the engine",
    ),
    "socketio.async_server.AsyncServer._engineio_server_class": (
        "199c42bf149247e0",
        "GatewayServer._engineio_server_class: LeanEngineIOServer",
    ),
    "socketio.async_server.AsyncServer._handle_connect": (
        "c97c480cf777de36",
        "GatewayServer._handle_connect and _serves copy its namespace test; with recovery "
        "it awaits manager.pre_connect before the connect handler and sends the CONNECT "
        "reply {'sid'} through _send_packet after it",
    ),
    "socketio.async_server.AsyncServer._handle_event": (
        "65178105ef8b593d",
        "GatewayServer._handle_event replaces it",
    ),
    "socketio.async_server.AsyncServer._handle_event_internal": (
        "472e8b723a12d507",
        "called by GatewayServer._drain without an event_handler; _send_ack sends the "
        "ACK as it does",
    ),
    "socketio.packet.Packet.decode": (
        "61ad7904b539f472",
        "parse_event reads the EVENT packets it takes as this decodes them",
    ),
    "socketio.packet.Packet.add_attachment": (
        "01e024038f3d99f5",
        "GatewayServer._attachments_too_large and _drop_binary read a half-built packet's "
        "attachments list and attachment_count, as this fills and checks them",
    ),
    "socketio.packet.Packet.encode": (
        "513c45be75181da2",
        "GatewayServer._send_ack and emit_to encode ACK and EVENT packets as this does",
    ),
    "socketio.async_server.AsyncServer.emit": (
        "84391bfd624104d1",
        "GatewayServer.emit_to: its fallback, for data with binary parts",
    ),
    "socketio.async_manager.AsyncManager.emit": (
        "01ccd5b82b4f955e",
        "GatewayServer.emit_to sends to one sid as this does, without a task per recipient",
    ),
    "socketio.base_manager.BaseManager.get_participants": (
        "7d78ad681c95de5b",
        "GatewayServer.emit_to: a sid's own room holds it, as eio_sid_from_sid finds it",
    ),
    "socketio.async_server.AsyncServer._handle_eio_message": (
        "bef50fc0e1635921",
        "GatewayServer._handle_eio_message wraps it; reads _binary_packet",
    ),
    "socketio.async_server.AsyncServer._handle_eio_connect": (
        "76704886d944a7e6",
        "stores self.environ[eio_sid], which slim_environ clears in place",
    ),
    "socketio.async_server.AsyncServer._handle_eio_disconnect": (
        "9344593148b66fd9",
        "GatewayServer._handle_eio_disconnect wraps it",
    ),
    "socketio.async_server.AsyncServer._handle_disconnect": (
        "c0b32ada5b371230",
        "GatewayServer._handle_disconnect wraps it",
    ),
    "socketio.async_server.AsyncServer._send_packet": (
        "a00022b42c1c29e9",
        "GatewayServer._send_packet wraps it (CONNECT_ERROR's payload made an object; the pid "
        "added to CONNECT replies with connection state recovery, which _handle_connect "
        "sends through it); GatewayServer's own acks and CONNECT_ERROR",
    ),
    # python-socketio, for connection state recovery: gateway/engine/recovery.py
    "socketio.base_manager.BaseManager.__init__": (
        "bfee992d912fe9a4",
        "RecoveringManager.__init__ calls it, then keeps the sids it is to give",
    ),
    "socketio.base_manager.BaseManager.pre_connect": (
        "bfdba4c0c8f1bd8a",
        "RecoveringManager.pre_connect does what it does with a given sid instead of a drawn "
        "one (enter the None room and the sid's own room, then pending_connect)",
    ),
    "socketio.async_manager.AsyncManager.pre_connect": (
        "84f2cdf2a4ddf07c",
        "RecoveringManager.pre_connect replaces it; _handle_connect awaits it first, before "
        "the connect handler, which therefore runs under the given sid",
    ),
    "socketio.async_server.AsyncServer.disconnect": (
        "7d2f76686c12cc23",
        "GatewayServer._restorable disconnects an older connection still holding the sid "
        "a CONNECT restores (its disconnect handler runs, reason 'server disconnect')",
    ),
    "socketio.async_server.AsyncServer._handle_ack": (
        "b7521c6c30972551",
        "GatewayServer._handle_ack calls it only for an id the manager holds a callback for",
    ),
    "socketio.async_manager.AsyncManager.trigger_callback": (
        "9cf95a1d1a3aaeeb",
        "callbacks are self.callbacks[sid][id] (GatewayServer._handle_ack looks there); "
        "an unknown one is logged at WARNING, unthrottled",
    ),
    "socketio.base_manager.BaseManager.sid_from_eio_sid": (
        "15467098a36bcd71",
        "GatewayServer._handle_event",
    ),
    "socketio.base_manager.BaseManager.eio_sid_from_sid": (
        "b0c0aeb5430d5248",
        "GatewayServer.slim_environ and emit_to",
    ),
    "socketio.base_manager.BaseManager.is_connected": (
        "d37721466718b4f4",
        "GatewayServer._handle_event and _drain",
    ),
}

#: Our subclass -> the upstream class it adapts.
OVERRIDES: dict[type, type] = {
    LeanSocket: engineio.async_socket.AsyncSocket,
    LeanEngineIOServer: engineio.AsyncServer,
    _WebSocket: engineio_aiohttp.WebSocket,
    GatewayServer: socketio.AsyncServer,
    RecoveringManager: socketio.AsyncManager,
}


def _resolve(name: str) -> Any:
    """The object named, defined there itself (not inherited: the hash is of its source)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = vars(obj)[attr]
        return obj
    raise LookupError(name)


def _digest(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def _installed() -> str:
    return ", ".join(f"{dist} {version(dist)}" for dist in RECORDED_WITH)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_upstream_method_is_the_one_our_override_was_written_against(name: str) -> None:
    recorded, why = UPSTREAM[name]
    try:
        obj = _resolve(name)
    except (LookupError, KeyError):
        pytest.fail(f"{name} is gone in {_installed()} ({why})")
    assert _digest(obj) == recorded, (
        f"{name} changed in {_installed()} (recorded with "
        f"{', '.join(f'{d} {v}' for d, v in RECORDED_WITH.items())}): {why}. Re-read it, "
        f"adapt the override, then record its new hash {_digest(obj)}."
    )


def test_every_override_of_an_upstream_method_is_recorded() -> None:
    """A new override of an upstream method must be added to UPSTREAM, with its reason."""
    missing = []
    for ours, theirs in OVERRIDES.items():
        for attr, value in vars(ours).items():
            if not callable(value) or (attr.startswith("__") and attr != "__init__"):
                continue
            owner = next((k for k in theirs.__mro__ if attr in vars(k)), None)
            if owner is None or owner is object:
                continue  # ours alone
            qualified = f"{owner.__module__}.{owner.__qualname__}.{attr}"
            if qualified not in UPSTREAM:
                missing.append(f"{ours.__qualname__}.{attr} overrides {qualified}")
    assert not missing, "record these in UPSTREAM: " + "; ".join(missing)
