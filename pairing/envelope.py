"""The fan-out envelope: what a replica publishes on a room's channel, and what it reads.

The gateway's fan-out (``gateway.fanout``) encodes and decodes it; the relay's scripts
publish a relayed terminal message in it without the gateway in between. So its field order
lives here once, beside the Lua that writes its tail (``PUBLISH_ENVELOPE``): the gateway
passes a prefix (``emit_prefix``: the fields up to ``data``), a script appends the held blob
(``data``), ``keep`` ('') and the message's seq. ``tests/pairing/test_envelope.py`` runs that
Lua on a real redis-server and decodes what it published with ``decode``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """One fan-out message, a msgpack array in this field order."""

    kind: str  # "emit", "evict", or "moved" (a replica gave up the room after an evict)
    room: str
    origin: str
    event: str = ""
    data: Any = None
    keep: str = ""
    #: A relayed terminal message's seq, added to ``data`` on delivery (0: none).
    seq: int = 0


encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(Envelope).decode

#: msgpack array header of an Envelope with every field present (kind ... seq).
_FULL_ENVELOPE = bytes([0x90 | len(Envelope.__struct_fields__)])
#: msgpack of ``keep`` = '' (fixstr of length 0), between ``data`` and ``seq``.
_EMPTY_KEEP = b"\xa0"


def emit_prefix(room: str, origin: str, event: str) -> bytes:
    """An emit Envelope up to its ``data``: a script appends data, keep ('') and seq."""
    return b"".join((_FULL_ENVELOPE, encode("emit"), encode(room), encode(origin), encode(event)))


def published(prefix: bytes, blob: bytes, seq: int) -> bytes:
    """In Python, what ``PUBLISH_ENVELOPE`` builds: prefix, held blob, keep '' and the seq."""
    return prefix + blob + _EMPTY_KEEP + encode(seq)


#: Lua: ``envelope(prefix, blob, seq)``, an ``emit_prefix`` completed with the held blob (the
#: msgpack ``data``), keep '' and the seq as a msgpack unsigned integer.
PUBLISH_ENVELOPE = """
local function pack_uint(n)
  if n < 128 then return string.char(n) end
  if n < 65536 then return string.char(0xcd, math.floor(n / 256), n % 256) end
  if n < 4294967296 then
    return string.char(0xce, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
      math.floor(n / 256) % 256, n % 256)
  end
  local hi, lo = math.floor(n / 4294967296), n % 4294967296
  return string.char(0xcf, math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256,
    math.floor(hi / 256) % 256, hi % 256, math.floor(lo / 16777216) % 256,
    math.floor(lo / 65536) % 256, math.floor(lo / 256) % 256, lo % 256)
end

local function envelope(prefix, blob, seq)
  return prefix .. blob .. '\\160' .. pack_uint(seq)
end
"""
