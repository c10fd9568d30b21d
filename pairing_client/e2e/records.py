"""Records: XChaCha20-Poly1305 per direction, a counter per record in the associated data.

The sender numbers its records 1, 2, 3, ... per key. The receiver drops a record whose
counter it has already accepted (a duplicate: the gateway's hold replayed it, or the sender
resent one that had been relayed before its connection died), delivers in counter order, and
holds back a record that comes early (one before it was refused and is being resent) until
the missing ones arrive or are declared lost (``skip_gap``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pysodium

from .frames import AEAD_NONCE_BYTES, FrameError, FrameType, RecordHeader, parse_record

#: Early records held back, waiting for a missing one, before it is taken as lost.
MAX_PENDING = 1024


class IntegrityError(Exception):
    """A record that does not authenticate under the session's key: altered or forged."""


class UnknownKeyError(Exception):
    """A well-formed record under another key (an earlier session's, or one we never had)."""


def seal(key: bytes, header: RecordHeader, plaintext: bytes, nonce: bytes) -> bytes:
    aad = header.pack()
    ct = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return aad + nonce + bytes(ct)


class Sealer:
    """One direction's sending side."""

    def __init__(self, key: bytes, key_id: bytes) -> None:
        self._key = key
        self.key_id = key_id
        self.counter = 0

    def seal(self, kind: FrameType, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        self.counter += 1
        header = RecordHeader(kind, self.key_id, self.counter)
        return seal(self._key, header, plaintext, nonce or secrets.token_bytes(AEAD_NONCE_BYTES))


@dataclass
class Opened:
    """Records ready for the application, in order; ``lost`` records were skipped before them."""

    records: list[tuple[FrameType, bytes]] = field(default_factory=list)
    lost: int = 0


class Opener:
    """One direction's receiving side."""

    def __init__(self, key: bytes, key_id: bytes, max_pending: int = MAX_PENDING) -> None:
        self._key = key
        self.key_id = key_id
        self.last = 0
        self.max_pending = max_pending
        self._pending: dict[int, tuple[FrameType, bytes]] = {}
        self._accept_jump = False

    def open(self, frame: bytes) -> Opened:
        """Authenticate one record; what it makes deliverable (maybe nothing: a duplicate).

        Raises IntegrityError (never deliver), UnknownKeyError, FrameError."""
        header, nonce, ct = parse_record(frame)
        if header.key_id != self.key_id:
            raise UnknownKeyError(header.key_id.hex())
        if header.counter <= self.last or header.counter in self._pending:
            return Opened()  # a duplicate: already delivered or held
        try:
            plain = pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                ct, header.pack(), nonce, self._key
            )
        except ValueError:
            raise IntegrityError(f"record {header.counter} failed authentication") from None
        self._pending[header.counter] = (header.kind, bytes(plain))
        out = Opened()
        if self._accept_jump or len(self._pending) > self.max_pending:
            self._accept_jump = False
            out.lost += self._skip()
        self._drain(out)
        return out

    def skip_gap(self) -> Opened:
        """The gateway said messages were lost for good: stop waiting for the missing ones."""
        out = Opened()
        if self._pending:
            out.lost += self._skip()
            self._drain(out)
        else:
            self._accept_jump = True
        return out

    def _skip(self) -> int:
        first = min(self._pending)
        lost = max(0, first - self.last - 1)
        self.last = first - 1
        return lost

    def _drain(self, out: Opened) -> None:
        while self.last + 1 in self._pending:
            self.last += 1
            out.records.append(self._pending.pop(self.last))


__all__ = ["FrameError", "IntegrityError", "Opened", "Opener", "Sealer", "UnknownKeyError", "seal"]
