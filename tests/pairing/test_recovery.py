"""RecoveryService and the offsets of connection state recovery.

Pid records are found only by the pid they were stored under, are changed only by the
connection that owns them, live for the window after a recoverable end and not at all after
another; offsets are exactly the decimal positions the gateway sends; ``covers`` says whether
the hold still has everything after a position.
"""

from __future__ import annotations

import asyncio
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from pairing import keys
from pairing.recovery import (
    PidRecord,
    RecoveryService,
    covers,
    decode_record,
    encode_record,
    format_offset,
    is_pid_shaped,
    new_pid,
    new_token,
    parse_offset,
)
from pairing.relay import Held, Recipient, RelayService
from pairing.scripts import as_str
from pairing.store import Redis
from tests.support.redis_server import RedisProcess
from tests.support.store_state import CommandMonitor

APP = "recovery-app-0123456789"


def record(**changes: object) -> PidRecord:
    base = {"token": new_token(), "sid": "sid-1", "app_session_id": APP, "app": True}
    return PidRecord(**{**base, **changes})  # type: ignore[arg-type]


async def test_a_record_is_found_by_its_pid_only_and_the_pid_is_not_stored(store: Redis) -> None:
    svc = RecoveryService(store)
    pid = new_pid()
    rec = record(position=7)
    assert await svc.open(pid, rec) == 7
    assert await svc.find(pid) == rec
    assert await svc.find(new_pid()) is None
    assert await svc.find(pid[:-1]) is None
    stored = [as_str(k) for k in await store.keys("*")]
    assert stored == [keys.recovery_pid(hashlib.sha256(pid.encode()).hexdigest())]
    assert pid not in as_str(await store.get(stored[0]) or b"")


async def test_open_reads_the_apps_position_in_the_same_call(store: Redis) -> None:
    relay = RelayService(store)
    await store.sadd(keys.runner_apps("r-rec"), APP)
    for i in range(3):
        await relay.output("r-rec", None, [Recipient(APP, None, b"")], b"m%d" % i)
    svc = RecoveryService(store)
    assert await svc.open(new_pid(), record(), read_position=True) == 3
    assert (
        await svc.open(new_pid(), record(app_session_id="other-app-0123456789"), read_position=True)
        == 0
    )


async def test_a_recoverable_end_keeps_the_record_for_the_window_only(store: Redis) -> None:
    svc = RecoveryService(store, window_s=0.3)
    pid = new_pid()
    rec = record()
    await svc.open(pid, rec)
    ended = record(token=rec.token, position=12)
    assert await svc.close(pid, ended, recoverable=True)
    assert await svc.find(pid) == ended
    ttl = await store.pttl(svc._key(pid))
    assert 0 < ttl <= 300
    for _ in range(100):
        if await svc.find(pid) is None:
            break
        await asyncio.sleep(0.05)
    assert await svc.find(pid) is None


async def test_another_end_drops_the_record(store: Redis) -> None:
    svc = RecoveryService(store)
    pid = new_pid()
    rec = record()
    await svc.open(pid, rec)
    assert await svc.close(pid, rec, recoverable=False)
    assert await svc.find(pid) is None


async def test_only_the_owning_connection_changes_a_record(store: Redis) -> None:
    """A restore elsewhere wrote its own token: the older connection ending later (evicted,
    or noticed dead by its replica) neither drops nor shortens the newer one's record."""
    svc = RecoveryService(store, window_s=0.2)
    pid = new_pid()
    older, newer = record(sid="s"), record(sid="s")
    await svc.open(pid, older)
    await svc.open(pid, newer)
    assert not await svc.close(pid, older, recoverable=False)
    assert not await svc.close(pid, older, recoverable=True)
    assert not await svc.update(pid, record(token=older.token, app=False))
    assert await svc.find(pid) == newer
    assert await store.pttl(svc._key(pid)) > 1000
    assert await svc.update(pid, record(token=newer.token, position=4))
    assert (await svc.find(pid)) == record(token=newer.token, position=4)


async def test_garbage_in_redis_or_from_clients_is_no_record(store: Redis) -> None:
    svc = RecoveryService(store)
    pid = new_pid()
    await store.set(svc._key(pid), b"x" * 16 + b"not json")
    assert await svc.find(pid) is None
    for bad in ["", "a" * 65, "has space", "ü" * 10, "a/b"]:
        assert await svc.find(bad) is None


def test_pids_are_long_random_and_url_safe() -> None:
    pids = {new_pid() for _ in range(1000)}
    assert len(pids) == 1000
    assert all(len(p) == 32 and is_pid_shaped(p) for p in pids)
    assert not is_pid_shaped(None) and not is_pid_shaped(123)


@given(st.integers(min_value=0, max_value=10**18))
def test_offsets_round_trip(seq: int) -> None:
    assert parse_offset(format_offset(seq)) == seq


@given(st.one_of(st.text(max_size=25), st.integers(), st.none(), st.floats(), st.booleans()))
def test_only_offsets_the_gateway_sends_parse(value: object) -> None:
    parsed = parse_offset(value)
    if parsed is not None:
        assert isinstance(value, str) and format_offset(parsed) == value


def test_offsets_that_look_numeric_but_are_not_ours() -> None:
    for bad in ["-1", "+1", "01", " 1", "1 ", "1.0", "١٢", "1e3", "9" * 20, ""]:
        assert parse_offset(bad) is None, bad


@given(
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=60),
)
def test_covers_means_every_message_after_the_position_is_held(
    last: int, held_count: int, after: int
) -> None:
    held_count = min(held_count, last)
    first = last - held_count + 1
    held = Held(last, first, [b"m"] * held_count)
    missed = set(range(after + 1, last + 1))
    available = set(range(first, last + 1))
    expected = after <= last and missed <= available
    assert covers(held, after) is expected


@given(
    st.text(min_size=1, max_size=30),
    st.text(min_size=1, max_size=40),
    st.booleans(),
    st.integers(min_value=-1, max_value=2**53),
)
def test_records_round_trip(sid: str, app: str, is_app: bool, position: int) -> None:
    rec = PidRecord(new_token(), sid, app, is_app, position)
    assert decode_record(encode_record(rec)) == rec


async def test_each_operation_is_one_round_trip(redis: Redis, redis_proc: RedisProcess) -> None:
    """Counted with MONITOR: open is one SET (with the position read, a GET issued in the
    same loop turn, which the auto-pipelined client writes with it), find one GET, update
    and close one EVALSHA each."""
    svc = RecoveryService(redis)
    await svc.load_scripts()
    pid, rec = new_pid(), record()
    async with CommandMonitor(redis_proc.url) as mon:
        _, sent = await mon.commands(redis, lambda: svc.open(pid, rec))
        assert [c.name for c in sent] == ["SET"]
        _, sent = await mon.commands(redis, lambda: svc.open(pid, rec, read_position=True))
        assert sorted(c.name for c in sent) == ["GET", "SET"]
        assert len({c.source for c in sent}) == 1  # the client's one pipelined connection
        _, sent = await mon.commands(redis, lambda: svc.find(pid))
        assert [c.name for c in sent] == ["GET"]
        _, sent = await mon.commands(redis, lambda: svc.update(pid, rec))
        assert [c.name for c in sent] == ["EVALSHA"]
        _, sent = await mon.commands(redis, lambda: svc.close(pid, rec, recoverable=True))
        assert [c.name for c in sent] == ["EVALSHA"]
