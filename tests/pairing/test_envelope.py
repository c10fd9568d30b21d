"""pairing.envelope: the Lua that relay scripts publish with, decoded by the fan-out's decoder.

The field order of the envelope is written twice, once in Lua (the tail a relay script
appends) and once as the msgspec struct the gateway decodes; this runs the Lua on a real
redis-server and decodes its output in Python, for seqs of every msgpack integer width.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import fanout
from pairing import envelope
from pairing.scripts import Script
from pairing.store import Redis

_RUN = envelope.PUBLISH_ENVELOPE + "\nreturn envelope(ARGV[1], ARGV[2], tonumber(ARGV[3]))\n"

_data = st.dictionaries(
    st.text(max_size=8), st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=40)), max_size=4
)
#: Each width of msgpack's unsigned integers: fixint, uint16, uint32, uint64 (the seq is
#: an INCR result, at most 2**53 where Lua's numbers stay exact).
_seq = st.one_of(
    st.integers(1, 127),
    st.integers(128, 65535),
    st.integers(65536, 2**32 - 1),
    st.integers(2**32, 2**53),
)


def test_the_gateway_decodes_with_the_envelope_of_pairing() -> None:
    assert fanout.Envelope is envelope.Envelope


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    room=st.text(max_size=30),
    origin=st.text(max_size=12),
    event=st.text(max_size=20),
    data=_data,
    seq=_seq,
)
async def test_lua_envelope_decodes_to_the_emit_it_stands_for(
    redis: Redis, room: str, origin: str, event: str, data: dict[str, Any], seq: int
) -> None:
    prefix = envelope.emit_prefix(room, origin, event)
    blob = msgspec.msgpack.encode(data)
    raw = await Script(redis, _RUN)([], [prefix, blob, seq])
    decoded = envelope.decode(raw)
    assert decoded == envelope.Envelope("emit", room, origin, event, data, "", seq)
    # What a cluster's relay publishes from Python decodes the same (the bytes may differ:
    # Lua packs 128..255 as uint16, msgspec as uint8; both are msgpack for the same number).
    assert envelope.decode(envelope.published(prefix, blob, seq)) == decoded
