"""GatewayServer's own EVENT decode and ACK/EVENT encode agree with python-socketio's Packet.

The gateway reads the common EVENT shape and writes acks and emits without python-socketio's
packet objects (gateway/engine/packets.py); whatever it takes, it must read exactly as Packet does,
and whatever it declines must be left to Packet.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from socketio import packet

from gateway.engine.codec import MsgspecJSON
from gateway.engine.packets import parse_event, plain

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


class Packet(packet.Packet):
    json = MsgspecJSON


def _encoded_events() -> st.SearchStrategy[str]:
    ids = st.none() | st.integers(0, 10**25)
    body = st.lists(json_values, max_size=3).map(MsgspecJSON.dumps)
    prefix = st.sampled_from(["", "/", "/admin,", "1-", "12-", "-", "0", "00"])
    tail = st.sampled_from(["", "x", "]", "{}", '"a-b"', "-5", " "])
    return st.builds(
        lambda p, i, b, t: "2" + p + ("" if i is None else str(i)) + b + t,
        prefix,
        ids,
        body,
        tail,
    )


@settings(max_examples=300, deadline=None)
@given(_encoded_events())
def test_an_event_taken_is_read_as_python_socketio_reads_it(encoded: str) -> None:
    taken = parse_event(encoded)
    if taken is None:
        return  # left to python-socketio
    pkt = Packet(encoded_packet=encoded)
    assert pkt.packet_type == packet.EVENT
    assert pkt.namespace is None
    assert (pkt.id, pkt.data) == taken


@given(st.lists(json_values, max_size=3), st.none() | st.integers(0, 10**17))
def test_the_usual_event_is_taken(args: list[Any], id: int | None) -> None:
    encoded = "2" + ("" if id is None else str(id)) + MsgspecJSON.dumps(["ev", *args])
    assert parse_event(encoded) == (id, ["ev", *args])


def test_what_is_declined() -> None:
    for encoded in ('2/admin,1["a"]', '21-["a"]', '2{"a":1}', "2", "21", '2["a"', "2[1,]"):
        assert parse_event(encoded) is None, encoded


binary_or_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)


@given(binary_or_json)
def test_plain_is_what_python_socketio_would_send_without_attachments(value: Any) -> None:
    assert plain(value) is not packet.Packet.data_is_binary(value)


@given(st.lists(json_values, max_size=3), st.integers(0, 10**9))
def test_an_ack_encoded_here_is_the_one_python_socketio_encodes(args: list[Any], id: int) -> None:
    ours = f"{packet.ACK}{id}{MsgspecJSON.dumps(args)}"
    assert ours == Packet(packet.ACK, namespace="/", id=id, data=args).encode()
    event = ["pairing:paired", *args]
    assert (
        f"{packet.EVENT}{MsgspecJSON.dumps(event)}"
        == Packet(packet.EVENT, namespace="/", data=event).encode()
    )
