"""Records: order, duplicates, early records, forgeries."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairing_client.e2e import FrameType, IntegrityError, Opener, Sealer, UnknownKeyError

KEY = bytes(range(32))
KEY_ID = b"\x01" * 8


def sealed(n: int) -> list[bytes]:
    sealer = Sealer(KEY, KEY_ID)
    return [sealer.seal(FrameType.DATA, f"r{i}".encode()) for i in range(1, n + 1)]


def texts(opener: Opener, frames: list[bytes]) -> list[bytes]:
    out = []
    for frame in frames:
        out += [plain for _, plain in opener.open(frame).records]
    return out


def test_counters_start_at_one_and_rise() -> None:
    sealer = Sealer(KEY, KEY_ID)
    counters = []
    for _ in range(3):
        frame = sealer.seal(FrameType.DATA, b"x")
        counters.append(int.from_bytes(frame[11:19], "big"))
    assert counters == [1, 2, 3]


def test_a_replayed_record_is_dropped() -> None:
    frames = sealed(3)
    opener = Opener(KEY, KEY_ID)
    assert texts(opener, frames + frames[1:]) == [b"r1", b"r2", b"r3"]


def test_an_early_record_waits_for_the_missing_one() -> None:
    r1, r2, r3 = sealed(3)
    opener = Opener(KEY, KEY_ID)
    assert texts(opener, [r1, r3]) == [b"r1"]
    assert texts(opener, [r3]) == []  # held, not delivered twice
    assert texts(opener, [r2]) == [b"r2", b"r3"]


def test_a_gap_the_gateway_announced_is_skipped_and_counted() -> None:
    r1, _r2, r3, r4 = sealed(4)
    opener = Opener(KEY, KEY_ID)
    texts(opener, [r1, r3])
    skipped = opener.skip_gap()
    assert skipped.lost == 1
    assert [p for _, p in skipped.records] == [b"r3"]
    assert texts(opener, [r4]) == [b"r4"]


def test_a_gap_announced_before_the_next_record_lets_it_through() -> None:
    r1, _r2, r3 = sealed(3)
    opener = Opener(KEY, KEY_ID)
    texts(opener, [r1])
    assert opener.skip_gap().records == []
    opened = opener.open(r3)
    assert (opened.lost, [p for _, p in opened.records]) == (1, [b"r3"])


def test_too_many_early_records_give_up_on_the_missing_one() -> None:
    frames = sealed(6)
    opener = Opener(KEY, KEY_ID, max_pending=3)
    got = texts(opener, [frames[0], frames[2], frames[3], frames[4], frames[5]])
    assert got == [b"r1", b"r3", b"r4", b"r5", b"r6"]


def test_a_forged_record_is_never_delivered() -> None:
    r1 = sealed(1)[0]
    opener = Opener(KEY, KEY_ID)
    forged = Sealer(secrets.token_bytes(32), KEY_ID).seal(FrameType.DATA, b"rm -rf ~\r")
    with pytest.raises(IntegrityError):
        opener.open(forged)
    assert texts(opener, [r1]) == [b"r1"]


def test_a_record_under_another_key_id() -> None:
    other = Sealer(KEY, b"\x02" * 8).seal(FrameType.DATA, b"x")
    with pytest.raises(UnknownKeyError):
        Opener(KEY, KEY_ID).open(other)


@given(st.data())
def test_any_replay_pattern_delivers_each_record_once_in_order(data: st.DataObject) -> None:
    """A sender resends a suffix of what it sent (a reconnect), any number of times: the
    receiver sees every record exactly once, in order."""
    frames = sealed(data.draw(st.integers(1, 12)))
    stream: list[bytes] = []
    sent = 0
    while sent < len(frames):
        upto = data.draw(st.integers(sent + 1, len(frames)))
        resend_from = data.draw(st.integers(0, sent))
        stream += frames[resend_from:upto]
        sent = upto
    opener = Opener(KEY, KEY_ID)
    assert texts(opener, stream) == [f"r{i}".encode() for i in range(1, len(frames) + 1)]
