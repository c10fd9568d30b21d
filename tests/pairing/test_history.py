"""PairingHistoryService on both stores: an append-only, capped audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pairing import HistoryEntry, HistoryEvent, PairingHistoryService
from pairing.store import Redis
from tests.support.store_state import server_now_ms

STREAM = "pairing:history"


def _no_runner(i: int) -> str | None:
    return None


async def record_many(
    history: PairingHistoryService, n: int, runner_of: Callable[[int], str | None] = _no_runner
) -> None:
    """``n`` "paired" events for apps a0..a{n-1}, 50 in flight at a time (pool has 64)."""
    for start in range(0, n, 50):
        await asyncio.gather(
            *(
                history.record("paired", app_session_id=f"a{i}", runner_id=runner_of(i))
                for i in range(start, min(start + 50, n))
            )
        )


@pytest.fixture
def history(store: Redis) -> PairingHistoryService:
    return PairingHistoryService(store)


def test_the_event_kinds() -> None:
    assert {e.value for e in HistoryEvent} == {
        "paired",
        "unpaired",
        "runner_disconnected",
        "runner_offline",
        "pair_failed",
        "register_refused",
        "runner_key_released",
    }
    assert HistoryEvent.PAIRED == "paired"
    assert str(HistoryEvent.RUNNER_OFFLINE) == f"{HistoryEvent.RUNNER_OFFLINE}" == "runner_offline"


async def test_records_every_kind_newest_first(
    store: Redis, history: PairingHistoryService
) -> None:
    before = await server_now_ms(store)
    ids = [
        await history.record(HistoryEvent.PAIRED, app_session_id="a1", runner_id="r1"),
        await history.record(HistoryEvent.UNPAIRED, app_session_id="a1", runner_id="r1"),
        await history.record(HistoryEvent.RUNNER_DISCONNECTED, app_session_id="a2", runner_id="r1"),
        await history.record(
            HistoryEvent.RUNNER_OFFLINE, app_session_id="a3", runner_id="r2", reason="sweep"
        ),
        await history.record(HistoryEvent.PAIR_FAILED, app_session_id="a4", reason="INVALID_CODE"),
    ]
    after = await server_now_ms(store)
    entries = await history.recent()
    assert [e.id for e in entries] == ids[::-1]
    assert [e.event for e in entries] == [
        "pair_failed",
        "runner_offline",
        "runner_disconnected",
        "unpaired",
        "paired",
    ]
    assert entries[0] == HistoryEntry(
        id=ids[4],
        event="pair_failed",
        at=entries[0].at,
        app_session_id="a4",
        reason="INVALID_CODE",
    )
    assert entries[1].runner_id == "r2" and entries[1].reason == "sweep"
    assert entries[4].app_session_id == "a1" and entries[4].runner_id == "r1"
    assert entries[4].reason is None
    for entry in entries:
        assert entry.at == int(entry.id.split("-")[0])
        assert before <= entry.at <= after
    assert await store.xlen(STREAM) == 5


async def test_stream_fields_are_only_the_given_ones(
    store: Redis, history: PairingHistoryService
) -> None:
    entry_id = await history.record("pair_failed", app_session_id="a1")
    ((raw_id, fields),) = await store.xrange(STREAM)
    assert raw_id.decode() == entry_id
    assert fields == {b"event": b"pair_failed", b"appSessionId": b"a1"}


async def test_plain_strings_and_unknown_events(history: PairingHistoryService) -> None:
    await history.record("unpaired", app_session_id="a1")
    assert (await history.recent())[0].event == "unpaired"
    with pytest.raises(ValueError):
        await history.record("exploded", app_session_id="a1")
    assert len(await history.recent()) == 1


async def test_ids_increase_with_time(history: PairingHistoryService) -> None:
    ids = [await history.record("paired", app_session_id=f"a{i}") for i in range(50)]
    parsed = [tuple(int(p) for p in i.split("-")) for i in ids]
    assert parsed == sorted(parsed) and len(set(parsed)) == 50
    entries = await history.recent(limit=50)
    assert [e.app_session_id for e in entries] == [f"a{i}" for i in range(49, -1, -1)]
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)


async def test_limit(history: PairingHistoryService) -> None:
    for i in range(10):
        await history.record("paired", app_session_id=f"a{i}")
    assert [e.app_session_id for e in await history.recent(limit=3)] == ["a9", "a8", "a7"]
    assert len(await history.recent(limit=100)) == 10
    assert await history.recent(limit=0) == []


async def test_empty_stream(history: PairingHistoryService) -> None:
    assert await history.recent() == []
    assert await history.recent(runner_id="r1") == []


async def test_filter_by_runner_and_by_app(history: PairingHistoryService) -> None:
    for i in range(12):
        await history.record("paired", app_session_id=f"a{i % 3}", runner_id=f"r{i % 4}")
    by_runner = await history.recent(runner_id="r1")
    assert [e.id for e in by_runner] == sorted((e.id for e in by_runner), reverse=True)
    assert [(e.app_session_id, e.runner_id) for e in by_runner] == [
        ("a0", "r1"),  # i = 9
        ("a2", "r1"),  # i = 5
        ("a1", "r1"),  # i = 1
    ]
    by_app = await history.recent(app_session_id="a2")
    assert [e.runner_id for e in by_app] == ["r3", "r0", "r1", "r2"]  # i = 11, 8, 5, 2
    both = await history.recent(runner_id="r2", app_session_id="a2")
    assert [(e.app_session_id, e.runner_id) for e in both] == [("a2", "r2")]
    assert await history.recent(runner_id="nobody") == []


async def test_filter_scans_past_one_page(history: PairingHistoryService) -> None:
    """Matches spread over 1200 entries (pages of 500) are all found, newest first."""
    await record_many(history, 1200, lambda i: "rare" if i % 100 == 0 else "common")
    rare = await history.recent(runner_id="rare")
    assert len(rare) == 12
    assert [e.id for e in rare] == sorted((e.id for e in rare), reverse=True)
    assert len(set(e.id for e in rare)) == 12
    assert len(await history.recent(limit=5, runner_id="rare")) == 5
    # max_scan bounds the search: the newest 500 entries hold 5 of the 12
    assert len(await history.recent(runner_id="rare", max_scan=500)) == 5


async def test_length_is_capped_approximately(store: Redis) -> None:
    history = PairingHistoryService(store, max_len=100)
    await record_many(history, 2000)
    length = await store.xlen(STREAM)
    assert 100 <= length <= 400  # approximate trimming: far below 2000, never below max_len
    entries = await history.recent(limit=1000)
    assert len(entries) == length
    # the newest survive, the oldest were trimmed
    assert entries[0].app_session_id == "a1999" or int(entries[0].app_session_id[1:]) > 1900
    assert all(int(e.app_session_id[1:]) >= 2000 - length - 50 for e in entries)


async def test_custom_stream_name(store: Redis) -> None:
    history = PairingHistoryService(store, stream="audit:test")
    await history.record("paired", app_session_id="a1")
    assert await store.xlen("audit:test") == 1
    assert await store.exists(STREAM) == 0


async def test_trimming_is_approximate_on_the_real_server(redis: Redis) -> None:
    """``MAXLEN ~``: Redis drops whole stream nodes (100 entries by default) rather than
    trimming to the exact length on every XADD."""
    history = PairingHistoryService(redis, max_len=100)
    await record_many(history, 2050)
    assert 100 < await redis.xlen(STREAM) <= 200
