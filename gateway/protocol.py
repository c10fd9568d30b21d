"""Wire types of the contract: event names, payload structs, error codes, ack shapes."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

RUNNER_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}\Z"
APP_SESSION_ID_PATTERN = r"^[A-Za-z0-9_\-]{16,128}\Z"
PAIRING_CODE_PATTERN = r"^[A-Za-z0-9\-]{4,32}\Z"
RUNNER_KEY_PATTERN = r"^[A-Za-z0-9_\-.~+/=]{22,256}\Z"

RunnerId = Annotated[str, msgspec.Meta(pattern=RUNNER_ID_PATTERN)]
AppSessionId = Annotated[str, msgspec.Meta(pattern=APP_SESSION_ID_PATTERN)]
ProposedCode = Annotated[str, msgspec.Meta(pattern=PAIRING_CODE_PATTERN)]
#: A seq a client says it has: 0 (nothing yet) or more, below 2**63.
LAST_SEQ_MAX = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=LAST_SEQ_MAX)]
#: Most apps one runner:register may resume (each costs a Redis round trip).
MAX_RESUMED_APPS = 256
RunnerKey = Annotated[str, msgspec.Meta(pattern=RUNNER_KEY_PATTERN)]

T = TypeVar("T")

_APP_SESSION_ID_RE = re.compile(APP_SESSION_ID_PATTERN)
_PAIRING_CODE_RE = re.compile(PAIRING_CODE_PATTERN)


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    UNAUTHORIZED = "UNAUTHORIZED"
    WRONG_ROLE = "WRONG_ROLE"
    NOT_REGISTERED = "NOT_REGISTERED"
    CODE_TAKEN = "CODE_TAKEN"
    INVALID_CODE = "INVALID_CODE"
    RUNNER_OFFLINE = "RUNNER_OFFLINE"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_PAIRED = "NOT_PAIRED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class Event(StrEnum):
    RUNNER_REGISTER = "runner:register"
    RUNNER_HEARTBEAT = "runner:heartbeat"
    RUNNER_OUTPUT = "runner:output"
    APP_PAIR = "app:pair"
    APP_UNPAIR = "app:unpair"
    APP_STATUS = "app:status"
    APP_COMMAND = "app:command"
    APP_RESIZE = "app:resize"


class ServerEvent(StrEnum):
    PAIRED = "pairing:paired"
    APP_UNPAIRED = "pairing:app_unpaired"
    UNPAIRED = "pairing:unpaired"
    TERMINAL_INPUT = "terminal:input"
    TERMINAL_OUTPUT = "terminal:output"
    TERMINAL_RESIZE = "terminal:resize"
    TERMINAL_GAP = "terminal:gap"


class UnpairReason(StrEnum):
    RUNNER_DISCONNECTED = "RUNNER_DISCONNECTED"
    RUNNER_OFFLINE = "RUNNER_OFFLINE"


# -- client -> server payloads (unknown fields are ignored, for forward compatibility) --


class RegisterPayload(msgspec.Struct, rename="camel"):
    runner_id: RunnerId
    pairing_code: ProposedCode | None = None
    token: str | None = None
    #: Resume: appSessionId -> the last terminal:input seq the runner has of that app.
    last_seq: (
        Annotated[dict[AppSessionId, Seq], msgspec.Meta(max_length=MAX_RESUMED_APPS)] | None
    ) = None
    #: The runner's own secret: the first registration with one binds the runnerId to it.
    runner_key: RunnerKey | None = None


class HeartbeatPayload(msgspec.Struct, rename="camel"):
    runner_id: RunnerId


class OutputPayload(msgspec.Struct, rename="camel"):
    data: Any
    app_session_id: AppSessionId | None = None


class PairPayload(msgspec.Struct, rename="camel"):
    #: Any string; one that cannot be a code is INVALID_CODE (a failed attempt), not
    #: INVALID_PAYLOAD, so guessing malformed codes is rate limited like any other guess.
    pairing_code: str


class EmptyPayload(msgspec.Struct):
    pass


class CommandPayload(msgspec.Struct):
    data: Any


#: A terminal dimension in character cells: an integer (not a bool, not 80.0), 1..10000.
TerminalCells = Annotated[int, msgspec.Meta(ge=1, le=10000)]


class ResizePayload(msgspec.Struct):
    """The app's window size, for the runner's pseudo-terminal (TIOCSWINSZ)."""

    cols: TerminalCells
    rows: TerminalCells


class GatewayError(Exception):
    """Ends an event with an error ack; the message is for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_ack(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error": code.value, "message": message}


def is_app_session_id(value: object) -> bool:
    return isinstance(value, str) and _APP_SESSION_ID_RE.match(value) is not None


def is_last_seq(value: object) -> bool:
    """A non-negative integer (not a bool, not a float), as ``auth.lastSeq`` must be."""
    return type(value) is int and 0 <= value <= LAST_SEQ_MAX


def is_code_shaped(value: str) -> bool:
    return _PAIRING_CODE_RE.match(value) is not None


def decode_args(args: tuple[Any, ...], kind: type[T], *, fields_required: bool) -> T:
    """One JSON object -> ``kind``; no argument is ``{}`` for events that need no fields."""
    if not args and not fields_required:
        return msgspec.convert({}, kind)
    if len(args) != 1:
        raise GatewayError(
            ErrorCode.INVALID_PAYLOAD,
            f"expected one JSON object as the event's argument, got {len(args)} arguments",
        )
    payload = args[0]
    if not isinstance(payload, dict):
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, "the payload must be a JSON object")
    try:
        return msgspec.convert(payload, kind, str_keys=True)
    except msgspec.ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, _short(str(exc))) from None


#: Deepest nesting of ``data`` relayed. python-socketio re-encodes by recursion, so deeper
#: data would fail on whichever replica delivers it; refusing it here answers the sender
#: the same way whether its peer is on this replica or another.
MAX_DATA_DEPTH = 256


def check_depth(value: Any, limit: int = MAX_DATA_DEPTH) -> None:
    if isinstance(value, dict | list) and _deeper_than(value, limit - 1):
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, f"data is nested deeper than {limit} levels")


def _deeper_than(value: dict[Any, Any] | list[Any], budget: int) -> bool:
    """Whether a container under ``value`` lies more than ``budget`` levels below it.

    Recursive (at most ``limit`` frames): on every relayed message, and a loop with its own
    stack of (item, depth) tuples cost twice as much for the usual flat data.
    """
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list) and (budget == 0 or _deeper_than(item, budget - 1)):
            return True
    return False


#: How every end-to-end encrypted frame starts (magic, version): docs/protocol.md.
E2E_PREFIX = b"\xe2\x01"
E2E_REQUIRED = "this gateway relays only end-to-end encrypted data (relay.require_e2e)"


def is_e2e(data: Any) -> bool:
    """Whether relayed ``data`` is an end-to-end encrypted frame (binary, E2 01 ...). The
    gateway never reads further: the rest is ciphertext, or public handshake values."""
    return isinstance(data, bytes | bytearray) and len(data) > 2 and data[:2] == E2E_PREFIX


def require_e2e(data: Any) -> None:
    if not is_e2e(data):
        raise GatewayError(ErrorCode.INVALID_PAYLOAD, E2E_REQUIRED)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
