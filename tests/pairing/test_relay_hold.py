"""RelayService against a model: seq numbers, the hold's limits, and stale expectations.

Hypothesis picks message sizes, limits and interleavings of two streams; after every message
the hold must be exactly what a model of "the newest max_messages within max_bytes" keeps,
with seq 1, 2, 3, ... per stream, and a relay whose expected recipients are out of date must
change nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairing import keys
from pairing.relay import IN, OUT, Held, InputStatus, Recipient, RelayService
from pairing.store import Redis, connect
from tests.support.redis_server import RedisProcess

APPS = ("hold-app-a-0123456789", "hold-app-b-0123456789")


class Model:
    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.seq = 0
        self.held: deque[tuple[int, bytes]] = deque()

    def push(self, blob: bytes) -> int:
        self.seq += 1
        if self.max_messages:
            self.held.append((self.seq, blob))
            while len(self.held) > self.max_messages or (
                self.held and sum(len(b) for _, b in self.held) > self.max_bytes
            ):
                self.held.popleft()
        return self.seq


async def check(
    url: str, max_messages: int, max_bytes: int, steps: list[tuple[int, int, int]]
) -> None:
    redis: Redis = connect(url)
    try:
        await redis.flushdb()
        relay = RelayService(redis, max_messages=max_messages, max_bytes=max_bytes)
        models = {app: Model(max_messages, max_bytes) for app in APPS}
        for app in APPS:
            await redis.sadd(keys.runner_apps("r-hold"), app)
        for n, (which, size, after) in enumerate(steps):
            app = APPS[which]
            blob = bytes([n % 256]) * size
            result = await relay.output(
                "r-hold", app, [Recipient(app, "gateway:room:app:x", b"\x97")], blob
            )
            assert result.seqs == [models[app].push(blob)]
            held = await relay.held(app, OUT, after)
            assert held is not None
            model = models[app]
            assert held.last_seq == model.seq
            expected = [b for s, b in model.held if s > after]
            assert held.messages == expected
            if model.held:  # the position of the first held entry gives its seq
                assert held.first_seq == model.held[0][0]
        # An out-of-date expectation relays nothing: no seq taken, nothing held.
        before = await relay.held(APPS[0], OUT, 0)
        stale = await relay.output("r-hold", None, [Recipient(APPS[0], None, b"")], b"zz")
        assert stale.seqs is None and stale.members == sorted(APPS)
        assert await relay.held(APPS[0], OUT, 0) == before
        # The other direction counts on its own; an app with no session relays nothing.
        result = await relay.input(APPS[0], "r-hold", None, b"", b"i")
        assert result.status is InputStatus.NOT_PAIRED
        assert await relay.held(APPS[0], IN, 0) == Held(0, 1, [])
    finally:
        await redis.aclose()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    max_messages=st.integers(0, 12),
    max_bytes=st.integers(1, 400),
    steps=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 120), st.integers(0, 40)), max_size=40
    ),
)
def test_the_hold_is_the_newest_within_its_limits(
    redis_proc: RedisProcess, max_messages: int, max_bytes: int, steps: list[tuple[int, int, int]]
) -> None:
    asyncio.run(check(redis_proc.url, max_messages, max_bytes, steps))


async def test_counter_and_byte_count_outlive_the_hold(redis: Redis) -> None:
    """The hold goes ttl after the last message; the counter (and the byte count beside the
    hold) are renewed only every 64th message, to seq_ttl + 64 * ttl, so that they still
    outlive it (the counter by seq_ttl after the last message)."""
    ttl_ms, seq_ttl_ms = 60_000, 600_000
    relay = RelayService(redis, ttl_s=ttl_ms / 1000, seq_ttl_s=seq_ttl_ms / 1000)
    app = APPS[0]
    await redis.sadd(keys.runner_apps("r-ttl"), app)
    seq_key, hold_key, bytes_key = keys.resume_keys(app, OUT)
    for n in range(1, 140):
        result = await relay.output("r-ttl", None, [Recipient(app, None, b"")], b"m" * 10)
        assert result.seqs == [n]
        hold_ttl = await redis.pttl(hold_key)
        assert ttl_ms - 5_000 < hold_ttl <= ttl_ms
        assert seq_ttl_ms + ttl_ms < await redis.pttl(seq_key) <= seq_ttl_ms + 64 * ttl_ms
        assert await redis.pttl(bytes_key) > hold_ttl
        assert int(await redis.get(bytes_key)) == 10 * n
    # Without a hold (resume.max_messages 0) the counter is renewed by every message.
    off = RelayService(redis, max_messages=0, ttl_s=ttl_ms / 1000, seq_ttl_s=seq_ttl_ms / 1000)
    await off.output("r-ttl", None, [Recipient(app, None, b"")], b"m")
    assert seq_ttl_ms - 5_000 < await redis.pttl(seq_key) <= seq_ttl_ms


async def test_a_lost_byte_count_is_counted_again(redis: Redis) -> None:
    """Held messages without their byte count (the key lost, or left to expire with the hold's
    TTL by an older version): the next message counts the hold, and the limit holds."""
    relay = RelayService(redis, max_messages=100, max_bytes=50)
    model = Model(100, 50)
    app = APPS[0]
    await redis.sadd(keys.runner_apps("r-lost"), app)
    bytes_key = keys.resume_keys(app, OUT)[2]
    for n, size in enumerate([10, 12, 7, 20, 9, 15, 11]):
        if n in (2, 5):
            await redis.delete(bytes_key)
        blob = bytes([n]) * size
        result = await relay.output("r-lost", None, [Recipient(app, None, b"")], blob)
        assert result.seqs == [model.push(blob)]
        held = await relay.held(app, OUT, 0)
        assert held is not None and held.messages == [b for _, b in model.held]
        assert int(await redis.get(bytes_key)) == sum(len(b) for _, b in model.held)
