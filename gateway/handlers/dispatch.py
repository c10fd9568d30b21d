"""The contract's events: thin handlers over the injected pairing services.

Each handler validates its payload into a msgspec type, calls a service, and returns the
ack. ``dispatch`` wraps every handler so that whatever happens the client gets exactly one
ack: success, the handler's error code, UNAVAILABLE when the store fails or does not answer
within ``store_timeout_s``, or INTERNAL for a bug (logged, never leaked)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import socketio

from gateway.addresses import Network, client_address
from gateway.engine import GatewayServer
from gateway.handlers.app_events import AppEvents
from gateway.handlers.base import STORE_ERRORS, Ack, Conn
from gateway.handlers.recovery import Recovery
from gateway.handlers.runner_events import RunnerEvents
from gateway.protocol import (
    ErrorCode,
    Event,
    GatewayError,
    error_ack,
    is_app_session_id,
    is_last_seq,
)

log = logging.getLogger("gateway.events")


class PairingGateway(RunnerEvents, AppEvents, Recovery):
    """Socket.IO-facing behaviour, with every dependency injected: one object per replica,
    its handlers grouped by concern in the classes it joins."""

    async def dispatch(self, event: str, sid: str, args: tuple[Any, ...]) -> Ack:
        started = time.perf_counter()
        handler = _HANDLERS.get(event)
        label = event if handler is not None else "unknown"
        try:
            conn = self.conns.get(sid)
            if handler is None:
                raise GatewayError(ErrorCode.INVALID_PAYLOAD, f"unknown event {event[:64]!r}")
            if conn is None:
                raise GatewayError(ErrorCode.INTERNAL, "connection state is missing")
            task = asyncio.current_task()
            assert task is not None
            deadline = self._deadlines.enter(task)
            try:
                ack = await handler(self, conn, args)
            except BaseException as exc:
                expired = self._deadlines.leave(deadline, task)
                if expired and isinstance(exc, asyncio.CancelledError):
                    raise TimeoutError("the event outlasted store_timeout_s") from None
                raise
            self._deadlines.leave(deadline, task)
            result = "success"
        except GatewayError as exc:
            ack, result = error_ack(exc.code, exc.message), exc.code.value
        except RecursionError:
            # Data nested deeper than python-socketio can re-encode (it recurses per level).
            ack = error_ack(ErrorCode.INVALID_PAYLOAD, "the payload is nested too deeply")
            result = ErrorCode.INVALID_PAYLOAD.value
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels(label).inc()
            log.warning("store unavailable", extra={"event": label, "error": repr(exc)})
            ack = error_ack(ErrorCode.UNAVAILABLE, "the pairing store is unreachable; retry")
            result = ErrorCode.UNAVAILABLE.value
        except Exception:
            log.exception("handler failed", extra={"event": label})
            ack = error_ack(ErrorCode.INTERNAL, "internal error")
            result = ErrorCode.INTERNAL.value
        self.metrics.record_event(label, result, time.perf_counter() - started)
        return ack


#: The contract's client events, each to its handler (called unbound: no table per instance).
_HANDLERS: dict[str, Callable[[PairingGateway, Conn, tuple[Any, ...]], Awaitable[Ack]]] = {
    Event.RUNNER_REGISTER: RunnerEvents.runner_register,
    Event.RUNNER_HEARTBEAT: RunnerEvents.runner_heartbeat,
    Event.RUNNER_OUTPUT: RunnerEvents.runner_output,
    Event.APP_PAIR: AppEvents.app_pair,
    Event.APP_UNPAIR: AppEvents.app_unpair,
    Event.APP_STATUS: AppEvents.app_status,
    Event.APP_COMMAND: AppEvents.app_command,
    Event.APP_RESIZE: AppEvents.app_resize,
}


def attach(sio: GatewayServer, gateway: PairingGateway, trusted: Sequence[Network]) -> None:
    """The server's connect and disconnect handlers; every other event goes to ``dispatch``.

    A CONNECT's ``auth`` is validated here: a bad one refuses the connection with the
    contract's INVALID_PAYLOAD, before any state exists for it.
    """

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        app_session_id = last_seq = None
        if auth is not None:
            if not isinstance(auth, dict):
                raise socketio.exceptions.ConnectionRefusedError(
                    "auth must be an object", {"error": "INVALID_PAYLOAD"}
                )
            app_session_id = auth.get("appSessionId")
            if app_session_id is not None and not is_app_session_id(app_session_id):
                raise socketio.exceptions.ConnectionRefusedError(
                    "auth.appSessionId must be 16-128 chars of A-Z a-z 0-9 _ -",
                    {"error": "INVALID_PAYLOAD"},
                )
            last_seq = auth.get("lastSeq")
            if last_seq is not None and not is_last_seq(last_seq):
                raise socketio.exceptions.ConnectionRefusedError(
                    "auth.lastSeq must be a non-negative integer", {"error": "INVALID_PAYLOAD"}
                )
        await gateway.connected(
            sid, client_address(environ, trusted), app_session_id, last_seq=last_seq
        )
        sio.slim_environ(sid)

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def on_disconnect(sid: str, reason: Any = None) -> None:
        try:
            await gateway.disconnected(sid, reason)
        except Exception:
            log.exception("disconnect handling failed")

    # every other event, straight from the socket's inbox (GatewayServer._drain)
    sio.event_handler = gateway.dispatch
    sio.after_connect = gateway.after_connect
    if gateway.recovery is not None:
        sio.recovery = gateway
