"""AppPairingService on both stores: pair/unpair with their limit and history in one script."""

from __future__ import annotations

import asyncio

import pytest

from pairing import (
    AppPairingService,
    HistoryEvent,
    NewEntry,
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    PairOutcome,
    PairStatus,
    RateLimitService,
)
from pairing.store import Redis

ADDR_KEY = "ratelimit:pair:addr:10.0.0.1"
APP_KEY = "ratelimit:pair:app:a1"


class Kit:
    def __init__(self, store: Redis, limit: int = 5) -> None:
        self.store = store
        self.sessions = PairingSessionService(store)
        self.codes = PairingCodeService(store)
        self.limits = RateLimitService(store, limit=limit, window_s=60)
        self.history = PairingHistoryService(store)
        self.pairing = AppPairingService(
            store, codes=self.codes, rate_limit=self.limits, history=self.history
        )

    async def online_runner(self, runner: str, code: str) -> None:
        await self.sessions.update_heartbeat(runner)
        await self.codes.register(runner, code)

    async def entries(self) -> list[tuple[str, str | None, str | None, str | None]]:
        """Oldest first: (event, app, runner, reason)."""
        newest_first = await self.history.recent(100)
        return [(e.event, e.app_session_id, e.runner_id, e.reason) for e in reversed(newest_first)]

    async def counts(self) -> list[int | None]:
        raw = await self.store.mget([ADDR_KEY, APP_KEY])
        return [None if c is None else int(c) for c in raw]

    async def pair(self, code: str, app: str = "a1", shaped: bool = True) -> PairOutcome:
        return await self.pairing.pair(code, app, address="10.0.0.1", code_shaped=shaped)


@pytest.fixture
def kit(store: Redis) -> Kit:
    return Kit(store)


async def test_pair_spends_the_code_and_records_the_pairing(kit: Kit) -> None:
    await kit.online_runner("r1", "CODE-1")
    result = await kit.pairing.pair("code-1", "a1", address="10.0.0.1")
    assert (result.status, result.runner_id, result.previous_runner_id) == (
        PairStatus.PAIRED,
        "r1",
        None,
    )
    session = await kit.sessions.get_session("a1")
    assert session is not None and session.runner_id == "r1"
    assert await kit.codes.lookup("CODE-1") is None
    assert await kit.codes.current_code("r1") is None
    assert await kit.entries() == [("paired", "a1", "r1", None)]
    assert await kit.counts() == [None, None]


async def test_repairing_records_the_unpairing_first(kit: Kit) -> None:
    await kit.online_runner("r1", "CODE-1")
    await kit.online_runner("r2", "CODE-2")
    await kit.pair("CODE-1")
    result = await kit.pairing.pair("CODE-2", "a1", address="10.0.0.1")
    assert (result.status, result.runner_id, result.previous_runner_id) == (
        PairStatus.PAIRED,
        "r2",
        "r1",
    )
    assert await kit.sessions.get_apps_by_runner_id("r1") == []
    assert await kit.sessions.get_apps_by_runner_id("r2") == ["a1"]
    assert await kit.entries() == [
        ("paired", "a1", "r1", None),
        ("unpaired", "a1", "r1", "REPAIRED"),
        ("paired", "a1", "r2", None),
    ]


async def test_an_unknown_code_counts_a_failure_and_records_it(kit: Kit) -> None:
    result = await kit.pairing.pair("NOPE-1", "a1", address="10.0.0.1")
    assert result.status is PairStatus.INVALID_CODE and result.runner_id is None
    assert await kit.counts() == [1, 1]
    for key in (ADDR_KEY, APP_KEY):
        assert 0 < await kit.store.pttl(key) <= 60_000
    assert await kit.entries() == [("pair_failed", "a1", None, "INVALID_CODE")]


async def test_a_code_not_shaped_like_one_is_not_looked_up_but_counted(kit: Kit) -> None:
    await kit.online_runner("r1", "CODE-1")
    await kit.store.set("pairing:code:", "r1")  # the placeholder key must not be read
    result = await kit.pair("CODE-1", shaped=False)
    assert result.status is PairStatus.INVALID_CODE
    assert await kit.codes.lookup("CODE-1") == "r1"
    assert await kit.counts() == [1, 1]


async def test_an_offline_runner_keeps_its_code_and_counts_nothing(kit: Kit) -> None:
    await kit.codes.register("r1", "CODE-1")  # never sent a heartbeat
    result = await kit.pairing.pair("CODE-1", "a1", address="10.0.0.1")
    assert (result.status, result.runner_id) == (PairStatus.RUNNER_OFFLINE, "r1")
    assert await kit.codes.lookup("CODE-1") == "r1"
    assert await kit.sessions.get_session("a1") is None
    assert await kit.counts() == [None, None]
    assert await kit.entries() == [("pair_failed", "a1", "r1", "RUNNER_OFFLINE")]


@pytest.mark.parametrize("full", [ADDR_KEY, APP_KEY])
async def test_past_the_limit_nothing_is_checked_counted_or_recorded(kit: Kit, full: str) -> None:
    await kit.online_runner("r1", "CODE-1")
    await kit.store.set(full, 5, px=60_000)
    result = await kit.pairing.pair("CODE-1", "a1", address="10.0.0.1")
    assert result.status is PairStatus.RATE_LIMITED
    assert await kit.codes.lookup("CODE-1") == "r1"
    assert await kit.sessions.get_session("a1") is None
    counts = await kit.counts()
    assert counts == ([5, None] if full == ADDR_KEY else [None, 5])
    assert await kit.entries() == []


async def test_the_limit_is_exact_under_concurrent_attempts(kit: Kit) -> None:
    """Check and count in one script: concurrent failures cannot slip past the limit."""
    results = await asyncio.gather(*(kit.pair(f"NOPE-{i}") for i in range(20)))
    statuses = [r.status for r in results]
    assert statuses.count(PairStatus.INVALID_CODE) == 5
    assert statuses.count(PairStatus.RATE_LIMITED) == 15
    assert await kit.counts() == [5, 5]
    assert [e[0] for e in await kit.entries()] == ["pair_failed"] * 5


async def test_unpair_records_once_and_is_idempotent(kit: Kit) -> None:
    await kit.online_runner("r1", "CODE-1")
    await kit.pair("CODE-1")
    assert await kit.pairing.unpair("a1") == "r1"
    assert await kit.pairing.unpair("a1") is None
    assert await kit.sessions.get_session("a1") is None
    assert await kit.sessions.get_apps_by_runner_id("r1") == []
    assert await kit.entries() == [
        ("paired", "a1", "r1", None),
        ("unpaired", "a1", "r1", "APP_UNPAIR"),
    ]


async def test_record_many_appends_in_order(kit: Kit) -> None:
    await kit.history.record_many(
        [
            NewEntry(HistoryEvent.UNPAIRED, app_session_id="a1", runner_id="r1", reason="X"),
            NewEntry(HistoryEvent.UNPAIRED, app_session_id="a2", runner_id="r1", reason="X"),
            NewEntry(HistoryEvent.RUNNER_OFFLINE, runner_id="r1", reason="X"),
        ]
    )
    await kit.history.record_many([])
    assert await kit.entries() == [
        ("unpaired", "a1", "r1", "X"),
        ("unpaired", "a2", "r1", "X"),
        ("runner_offline", None, "r1", "X"),
    ]
    raw = await kit.store.xrange("pairing:history")
    assert raw[2][1] == {b"event": b"runner_offline", b"runnerId": b"r1", b"reason": b"X"}


async def test_the_scripts_trim_the_stream(store: Redis) -> None:
    kit = Kit(store)
    kit.history.max_len = 10
    await kit.history.record_many([NewEntry(HistoryEvent.PAIRED, runner_id="r")] * 300)
    for i in range(50):
        await kit.pair(f"NOPE-{i}", app=f"x{i}")
    assert await store.xlen("pairing:history") < 200
