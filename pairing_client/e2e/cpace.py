"""CPace (draft-irtf-cfrg-cpace), cipher suite CPACE-RISTR255-SHA512, over libsodium.

Each function is the draft's function of the same name; the draft's ristretto255 test vectors
(tests/support/vectors/cpace-ristretto255.json) check every step. libsodium (through pysodium)
does the group work: ``crypto_core_ristretto255_from_hash`` is the element derivation of
RFC 9496, ``crypto_scalarmult_ristretto255`` decodes, multiplies and encodes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pysodium

DSI = b"CPaceRistretto255"
#: SHA-512's input block size: the generator string's zero padding fills the first block.
S_IN_BYTES = 128
#: The encoding of the neutral element (G.I): what scalar_mult_vfy returns for a bad point.
IDENTITY = bytes(32)
GROUP_SIZE_BITS = 252


class CPaceError(ValueError):
    """A received share that is not a valid group element, or a shared point that is the
    identity: the draft says abort."""


def prepend_len(data: bytes) -> bytes:
    """The LEB128 encoding of ``len(data)``, then ``data``."""
    length = len(data)
    out = bytearray()
    while True:
        if length < 128:
            out.append(length)
        else:
            out.append((length & 0x7F) | 0x80)
        length >>= 7
        if length == 0:
            break
    return bytes(out) + data


def lv_cat(*args: bytes) -> bytes:
    return b"".join(prepend_len(a) for a in args)


def generator_string(dsi: bytes, prs: bytes, ci: bytes, sid: bytes, s_in_bytes: int) -> bytes:
    len_zpad = max(0, s_in_bytes - 1 - len(prepend_len(prs)) - len(prepend_len(dsi)))
    return lv_cat(dsi, prs, bytes(len_zpad), ci, sid)


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """The generator g (encoded) from the password, channel identifier and session id."""
    gen_str = generator_string(DSI, prs, ci, sid, S_IN_BYTES)
    return bytes(pysodium.crypto_core_ristretto255_from_hash(hashlib.sha512(gen_str).digest()))


def sample_scalar() -> bytes:
    """32 random bytes with the bits above the group size cleared (little-endian)."""
    raw = bytearray(secrets.token_bytes(32))
    raw[31] &= 0x0F
    return bytes(raw)


def scalar_mult(y: bytes, g: bytes) -> bytes:
    """y * g for a generator we derived ourselves (never the identity for a scalar != 0)."""
    return bytes(pysodium.crypto_scalarmult_ristretto255(y, g))


def scalar_mult_vfy(y: bytes, x: bytes) -> bytes:
    """y * decode(x), or the identity's encoding when x does not decode (or the product is the
    identity: libsodium refuses both, and pysodium raises a bare ValueError for either)."""
    if len(x) != 32 or not pysodium.crypto_core_ristretto255_is_valid_point(x):
        return IDENTITY
    try:
        return bytes(pysodium.crypto_scalarmult_ristretto255(y, x))
    except ValueError:
        return IDENTITY


def transcript_ir(ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    return lv_cat(ya, ada) + lv_cat(yb, adb)


def isk_ir(sid: bytes, k: bytes, ya: bytes, ada: bytes, yb: bytes, adb: bytes) -> bytes:
    """The intermediate session key, initiator-responder setting."""
    return hashlib.sha512(lv_cat(DSI + b"_ISK", sid, k) + transcript_ir(ya, ada, yb, adb)).digest()


def shared_isk(
    y: bytes, peer: bytes, sid: bytes, ya: bytes, ada: bytes, yb: bytes, adb: bytes
) -> bytes:
    """K = scalar_mult_vfy(y, peer), abort on the identity, then ISK."""
    k = scalar_mult_vfy(y, peer)
    if hmac.compare_digest(k, IDENTITY):
        raise CPaceError("the peer's share is not a valid group element")
    return isk_ir(sid, k, ya, ada, yb, adb)


def mac_key(sid: bytes, isk: bytes) -> bytes:
    """Explicit key confirmation (the draft's Security Considerations): H(b"CPaceMac"||sid||ISK)."""
    return hashlib.sha512(b"CPaceMac" + sid + isk).digest()


def confirmation_tag(key: bytes, y: bytes, ad: bytes) -> bytes:
    """The tag a party sends over its own message: HMAC-SHA512(mac_key, lv_cat(Y, AD))."""
    return hmac.new(key, lv_cat(y, ad), hashlib.sha512).digest()
