"""The bytes on the wire: E2E frames carried as the binary ``data`` of ``app:command`` and
``runner:output``, which the gateway relays without reading.

Every frame starts with MAGIC, VERSION, TYPE. Handshake frames carry CPace messages in clear;
records (DATA, RESIZE, CONTROL) are XChaCha20-Poly1305 under a per-direction key:

    record = E2 01 TYPE || key_id (8) || counter (8, big-endian) || nonce (24) || ct || tag (16)
    AAD    = E2 01 TYPE || key_id || counter
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0xE2
VERSION = 0x01
PREFIX = bytes([MAGIC, VERSION])
NONCE_BYTES = 16
SHARE_BYTES = 32
TAG_BYTES = 64
KEY_ID_BYTES = 8
PAIRING_KEY_ID_BYTES = 16
AEAD_NONCE_BYTES = 24
AEAD_TAG_BYTES = 16
HEADER = struct.Struct(">3s8sQ")  # PREFIX+TYPE, key_id, counter
HEADER_BYTES = HEADER.size  # 19
RECORD_OVERHEAD = HEADER_BYTES + AEAD_NONCE_BYTES + AEAD_TAG_BYTES  # 59


class FrameType(enum.IntEnum):
    HELLO = 0x01  # app -> runner: nonce_a
    RESPONSE = 0x02  # runner -> app: nonce_b || Yb
    FINISH = 0x03  # app -> runner: Ya || Ta
    CONFIRM = 0x04  # runner -> app: Tb
    REJECT = 0x05  # runner -> app: reason (1 byte)
    REKEY_HELLO = 0x06  # app -> runner: nonce_a || pairing_key_id
    DATA = 0x10  # terminal bytes
    RESIZE = 0x11  # JSON {"cols", "rows"}
    CONTROL = 0x12  # JSON object, e.g. {"exit": status}


RECORD_TYPES = frozenset({FrameType.DATA, FrameType.RESIZE, FrameType.CONTROL})


class RejectReason(enum.IntEnum):
    WRONG_CODE = 0x01  # key confirmation failed (or the code was already spent): code burnt
    UNKNOWN_KEY = 0x02  # a re-key for a pairing key the runner does not hold: pair again
    INTEGRITY = 0x03  # a record from the app failed authentication: session closed
    NO_SESSION = 0x04  # a record under a key the runner does not hold: re-key


#: Body length of each handshake frame (after the 3-byte prefix).
HANDSHAKE_LENGTHS = {
    FrameType.HELLO: NONCE_BYTES,
    FrameType.RESPONSE: NONCE_BYTES + SHARE_BYTES,
    FrameType.FINISH: SHARE_BYTES + TAG_BYTES,
    FrameType.CONFIRM: TAG_BYTES,
    FrameType.REJECT: 1,
    FrameType.REKEY_HELLO: NONCE_BYTES + PAIRING_KEY_ID_BYTES,
}


class FrameError(ValueError):
    """Bytes that are not a well-formed E2E frame of this version."""


def is_e2e(data: object) -> bool:
    """Whether a relayed ``data`` is an E2E frame (what ``relay.require_e2e`` checks)."""
    return isinstance(data, bytes | bytearray) and len(data) >= 3 and data[:2] == PREFIX


def frame_type(data: bytes) -> FrameType:
    if not is_e2e(data):
        raise FrameError("not an E2E frame of version 1")
    try:
        return FrameType(data[2])
    except ValueError:
        raise FrameError(f"unknown frame type 0x{data[2]:02x}") from None


def handshake(kind: FrameType, body: bytes) -> bytes:
    if len(body) != HANDSHAKE_LENGTHS[kind]:
        raise FrameError(f"{kind.name} body must be {HANDSHAKE_LENGTHS[kind]} bytes")
    return PREFIX + bytes([kind]) + body


def handshake_body(data: bytes, kind: FrameType) -> bytes:
    if frame_type(data) is not kind or len(data) != 3 + HANDSHAKE_LENGTHS[kind]:
        raise FrameError(f"malformed {kind.name}")
    return bytes(data[3:])


@dataclass(frozen=True)
class RecordHeader:
    kind: FrameType
    key_id: bytes
    counter: int

    def pack(self) -> bytes:
        return HEADER.pack(PREFIX + bytes([self.kind]), self.key_id, self.counter)


def parse_record(data: bytes) -> tuple[RecordHeader, bytes, bytes]:
    """(header, nonce, ciphertext-with-tag); the header is only trusted once the AEAD opens."""
    kind = frame_type(data)
    if kind not in RECORD_TYPES or len(data) < RECORD_OVERHEAD:
        raise FrameError("malformed record")
    _, key_id, counter = HEADER.unpack_from(data)
    nonce = bytes(data[HEADER_BYTES : HEADER_BYTES + AEAD_NONCE_BYTES])
    return (
        RecordHeader(kind, bytes(key_id), counter),
        nonce,
        bytes(data[HEADER_BYTES + AEAD_NONCE_BYTES :]),
    )
