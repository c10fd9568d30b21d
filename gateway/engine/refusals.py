"""Refused client input: counted by kind, logged at WARNING, rate-limited per client address.

A client's bad input is the client's problem, not the server's: it never logs a traceback or
a line at ERROR, and a client sending garbage in a loop cannot fill the disk. Each refusal
increments ``gateway_protocol_errors_total{kind}`` (through the server's
``on_protocol_error``), and is logged as one line when the client's address has log budget
left. Fields the client controls (a sid, a packet) are escaped (``repr``: no NUL, no raw
bytes) and truncated.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from gateway.addresses import Network, client_address

log = logging.getLogger("gateway.protocol")

#: The kinds of refused input, the metric's label values (a fixed set: bounded cardinality).
BAD_REQUEST = "bad_request"  # an HTTP request Engine.IO refuses (400)
UNKNOWN_SESSION = "unknown_session"  # a sid the server does not (or no longer) know (400)
PAYLOAD_TOO_LARGE = "payload_too_large"  # a POST body or frame over max_payload_bytes
ENGINEIO_PACKET = "engineio_packet"  # an Engine.IO packet that is undecodable or unexpected
SOCKETIO_PACKET = "socketio_packet"  # a Socket.IO packet that does not decode
CONNECT = "connect"  # a CONNECT refused with CONNECT_ERROR (bad payload, namespace, twice)
KINDS = (
    BAD_REQUEST,
    UNKNOWN_SESSION,
    PAYLOAD_TOO_LARGE,
    ENGINEIO_PACKET,
    SOCKETIO_PACKET,
    CONNECT,
)

#: python-engineio's ``_log_error_once`` keys, as kinds.
ENGINEIO_KEYS = {"bad-sid": UNKNOWN_SESSION}

#: Characters of a client-controlled field kept in a log line.
DETAIL_MAX = 120
#: Lines per address: a burst, then one per ``REFILL_S``; the next line says how many
#: refusals were not logged in between.
BURST = 5
REFILL_S = 10.0
#: Addresses remembered (least recently refused forgotten first).
MAX_ADDRESSES = 10_000

#: The address of the client whose request is being served, set by the Engine.IO server for
#: each request (a string: a context captured by a timer or task keeps no request alive).
current_client: ContextVar[str] = ContextVar("current_client", default="unknown")


def client_of(request: Any, trusted: Sequence[Network]) -> str:
    """A request's client address: the peer, or behind trusted proxies X-Forwarded-For's."""
    if not trusted:
        return str(request.remote or "unknown")
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    return client_address({"aiohttp.request": request, "HTTP_X_FORWARDED_FOR": forwarded}, trusted)


def escaped(value: Any, limit: int = DETAIL_MAX) -> str:
    """A client-controlled value for a log line: at most ``limit`` characters of it, every
    control and non-ASCII character backslash-escaped (no NUL or raw byte reaches a log)."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: limit + 1]).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else repr(value)
    cut = len(text) > limit
    text = text[:limit].encode("unicode_escape").decode("ascii")
    return text + "..." if cut else text


class _Budget:
    __slots__ = ("stamp", "suppressed", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = float(BURST)
        self.stamp = now
        self.suppressed = 0


class RefusalLog:
    """Per-address log budget (a token bucket), for a bounded number of addresses."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._budgets: OrderedDict[str, _Budget] = OrderedDict()

    def allow(self, address: str) -> int | None:
        """None when this address's line is suppressed, else how many were suppressed."""
        now = self._clock()
        budget = self._budgets.get(address)
        if budget is None:
            budget = self._budgets[address] = _Budget(now)
            if len(self._budgets) > MAX_ADDRESSES:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(address)
            budget.tokens = min(float(BURST), budget.tokens + (now - budget.stamp) / REFILL_S)
            budget.stamp = now
        if budget.tokens < 1:
            budget.suppressed += 1
            return None
        budget.tokens -= 1
        suppressed, budget.suppressed = budget.suppressed, 0
        return suppressed


_log_budget = RefusalLog()


def refused(server: Any, kind: str, what: str, detail: Any = None) -> None:
    """Count a refusal on ``server`` (an Engine.IO server) and log it if the budget allows.

    ``what`` is ours (a constant text); ``detail`` is the client's (escaped, truncated).
    """
    counter = getattr(server, "on_protocol_error", None)
    if counter is not None:
        counter(kind)
    address = current_client.get()
    suppressed = _log_budget.allow(address)
    if suppressed is None:
        return
    extra: dict[str, Any] = {"kind": kind, "client": escaped(address, 64)}
    if detail is not None:
        extra["detail"] = escaped(detail)
    if suppressed:
        extra["suppressed"] = suppressed
    log.warning(what, extra=extra)
