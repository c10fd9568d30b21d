"""RateLimitService on both stores: fixed windows of counted failures per subject."""

from __future__ import annotations

import pytest

from pairing import RateLimitService, keys
from pairing.store import Redis
from tests.support.store_state import wait_gone

ADDR = keys.rate_limit("addr", "10.0.0.1")
APP = keys.rate_limit("app", "app-1")


def test_key_layout(store: Redis) -> None:
    assert RateLimitService(store).key("addr", "10.0.0.1") == "ratelimit:addr:10.0.0.1"
    cluster = RateLimitService(store, layout=keys.CLUSTER)
    assert cluster.key("addr", "10.0.0.1") == "ratelimit:addr:{10.0.0.1}"


async def test_limit_is_reached_after_exactly_limit_hits(store: Redis) -> None:
    limits = RateLimitService(store, limit=3, window_s=60)
    for expected in (1, 2):
        assert await limits.hit(ADDR) == [expected]
        assert not await limits.is_limited(ADDR)
    assert await limits.hit(ADDR) == [3]
    assert await limits.is_limited(ADDR)
    assert await limits.hit(ADDR) == [4]  # hits past the limit still count
    assert await limits.is_limited(ADDR)


async def test_default_is_five_per_minute(store: Redis) -> None:
    limits = RateLimitService(store)
    for _ in range(4):
        await limits.hit(APP)
    assert not await limits.is_limited(APP)
    await limits.hit(APP)
    assert await limits.is_limited(APP)
    assert 55_000 < await store.pttl(APP) <= 60_000


async def test_the_window_opens_at_the_first_hit_and_is_not_extended(store: Redis) -> None:
    limits = RateLimitService(store, limit=3, window_s=60)
    await limits.hit(ADDR)
    await store.pexpire(ADDR, 30_000)  # as if the window were half over
    await limits.hit(ADDR)
    await limits.hit(ADDR)
    pttl = await store.pttl(ADDR)
    assert 0 < pttl <= 30_000  # later hits did not push the window out


async def test_window_expiry_resets_the_count(store: Redis) -> None:
    limits = RateLimitService(store, limit=2, window_s=0.4)
    assert [await limits.hit(ADDR), await limits.hit(ADDR)] == [[1], [2]]
    pttl = await store.pttl(ADDR)
    assert pttl <= 400 and pttl != -1  # expiring (-2: already gone on a slow machine)
    await wait_gone(store, ADDR)
    assert not await limits.is_limited(ADDR)
    assert await limits.hit(ADDR) == [1]


async def test_subjects_are_independent(store: Redis) -> None:
    limits = RateLimitService(store, limit=2, window_s=60)
    other = keys.rate_limit("addr", "10.0.0.2")
    await limits.hit(ADDR)
    await limits.hit(ADDR)
    assert await limits.is_limited(ADDR)
    assert not await limits.is_limited(other)
    assert not await limits.is_limited(APP)
    assert await limits.hit(other) == [1]


async def test_hit_counts_every_subject_in_one_call(store: Redis) -> None:
    limits = RateLimitService(store, limit=3, window_s=60)
    await limits.hit(ADDR)
    assert await limits.hit(ADDR, APP) == [2, 1]
    assert await limits.hit(APP, ADDR) == [2, 3]
    for key in (ADDR, APP):
        assert 55_000 < await store.pttl(key) <= 60_000


@pytest.mark.parametrize(
    ("addr_hits", "app_hits", "limited"),
    [(0, 0, False), (1, 1, False), (2, 0, True), (0, 2, True), (2, 2, True)],
)
async def test_is_limited_when_any_subject_is(
    store: Redis, addr_hits: int, app_hits: int, limited: bool
) -> None:
    limits = RateLimitService(store, limit=2, window_s=60)
    for _ in range(addr_hits):
        await limits.hit(ADDR)
    for _ in range(app_hits):
        await limits.hit(APP)
    assert await limits.is_limited(ADDR, APP) is limited
    assert await limits.is_limited(APP, ADDR) is limited


async def test_no_subjects(store: Redis) -> None:
    limits = RateLimitService(store)
    assert await limits.is_limited() is False
    assert await limits.hit() == []
    await limits.reset()


async def test_reset(store: Redis) -> None:
    limits = RateLimitService(store, limit=1, window_s=60)
    await limits.hit(ADDR, APP)
    assert await limits.is_limited(ADDR)
    await limits.reset(ADDR)
    assert not await limits.is_limited(ADDR)
    assert await limits.is_limited(APP)
    assert await limits.hit(ADDR) == [1]
