"""HKDF (RFC 5869) over the standard library's HMAC: libsodium 1.0.18 (Debian 12) predates
its own crypto_kdf_hkdf_* functions."""

from __future__ import annotations

import hashlib
import hmac


def extract(salt: bytes, ikm: bytes, digest: str = "sha512") -> bytes:
    if not salt:
        salt = bytes(hashlib.new(digest).digest_size)
    return hmac.new(salt, ikm, digest).digest()


def expand(prk: bytes, info: bytes, length: int, digest: str = "sha512") -> bytes:
    size = hashlib.new(digest).digest_size
    if length > 255 * size:
        raise ValueError("HKDF cannot expand to that length")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), digest).digest()
        out += block
        counter += 1
    return out[:length]
