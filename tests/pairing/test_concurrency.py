"""Many clients at once on the real server: pairings stay consistent, codes are spent once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from pairing import PairingCodeService, PairingSessionService, RedeemStatus
from pairing.store import Redis, connect
from tests.support.redis_server import RedisProcess
from tests.support.store_state import snapshot

CLIENTS = 4


@pytest.fixture
async def pools(redis: Redis, redis_proc: RedisProcess) -> AsyncIterator[list[Redis]]:
    """Independent clients, each with its own connection pool (``redis`` flushes around)."""
    made = [connect(redis_proc.url) for _ in range(CLIENTS)]
    yield made
    for client in made:
        await client.aclose()


async def test_interleaved_operations_keep_sessions_and_sets_consistent(
    redis: Redis, pools: list[Redis]
) -> None:
    services = [PairingSessionService(c) for c in pools]
    apps = [f"app-{i}" for i in range(24)]
    runners = [f"runner-{i}" for i in range(6)]
    counts: dict[str, int] = {}
    removed_by_remove_all: list[str] = []

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        svc = services[seed % CLIENTS]
        for _ in range(120):
            op = rng.choices(
                ["create", "pair", "remove", "unpair", "remove_all"], weights=[4, 4, 2, 2, 1]
            )[0]
            counts[op] = counts.get(op, 0) + 1
            if op == "create":
                await svc.create_session(rng.choice(apps), rng.choice(runners))
            elif op == "pair":
                await svc.pair(rng.choice(apps), rng.choice(runners))
            elif op == "remove":
                await svc.remove_session(rng.choice(apps))
            elif op == "unpair":
                await svc.unpair(rng.choice(apps))
            else:
                removed_by_remove_all.extend(
                    await svc.remove_all_sessions_for_runner(rng.choice(runners))
                )

    await asyncio.gather(*(worker(seed) for seed in range(CLIENTS * 8)))

    snap = await snapshot(redis)
    assert snap.problems() == []
    assert set(snap.sessions) <= set(apps)
    assert set(snap.sets) <= set(runners)
    assert removed_by_remove_all  # the mix really exercised remove_all under contention
    assert all(counts[op] > 50 for op in ("create", "pair", "remove", "unpair", "remove_all"))
    # every service agrees with the raw keys
    for app in apps:
        session = await services[0].get_session(app)
        assert (session.runner_id if session else None) == snap.sessions.get(app)


async def test_concurrent_moves_of_one_app_form_a_single_chain(
    redis: Redis, pools: list[Redis]
) -> None:
    """40 simultaneous pairs of one app with 40 runners: each sees the previous one's write."""
    services = [PairingSessionService(c) for c in pools]
    runners = [f"runner-{i}" for i in range(40)]
    previous = await asyncio.gather(
        *(services[i % CLIENTS].pair("app-1", r) for i, r in enumerate(runners))
    )
    assert previous.count(None) == 1  # exactly one call found the app unpaired
    named = [p for p in previous if p is not None]
    assert len(named) == len(set(named)) == len(runners) - 1  # each runner replaced once
    (last,) = set(runners) - set(named)  # the one never replaced holds the app
    snap = await snapshot(redis)
    assert snap.sessions == {"app-1": last}
    assert snap.sets == {last: {"app-1"}}


async def test_remove_all_racing_with_re_pairing(redis: Redis, pools: list[Redis]) -> None:
    """Apps moving away while their old runner is cleared: each move happens wholly before
    or wholly after the clean-up, and remove_all reports exactly the apps it unpaired."""
    services = [PairingSessionService(c) for c in pools]
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    for trial in range(60):
        await redis.flushdb()
        apps = [f"app-{i}" for i in range(6)]
        for app in apps:
            await services[0].create_session(app, "old")
        # the clean-up goes out at a random position among the moves
        position = rng.randrange(4)
        calls: list[Awaitable[Any]] = [
            services[1 + i % 3].pair(app, "new") for i, app in enumerate(apps[:3])
        ]
        calls.insert(position, services[0].remove_all_sessions_for_runner("old"))
        results = await asyncio.gather(*calls)
        removed = results.pop(position)
        moves = results
        outcomes.update(str(prev) for prev in moves)
        snap = await snapshot(redis)
        assert snap.problems() == [], trial
        assert "old" not in snap.sets
        for app, prev in zip(apps[:3], moves, strict=True):
            # moved before the clean-up (prev "old", not reported) or after it (prev None,
            # reported as unpaired); either way it ends with "new"
            assert snap.sessions.get(app) == "new"
            assert (app in removed) == (prev is None), (trial, app, prev, removed)
            assert prev in (None, "old")
        for app in apps[3:]:
            assert app in removed and app not in snap.sessions
        assert set(removed) <= set(apps)
    # both orders really happened: moves before and after the clean-up
    assert outcomes["old"] > 0 and outcomes["None"] > 0, outcomes


@pytest.mark.parametrize("method", ["redeem", "consume"])
async def test_two_apps_racing_for_one_code_only_one_wins(
    redis: Redis, pools: list[Redis], method: str
) -> None:
    codes = [PairingCodeService(c) for c in pools]
    sessions = PairingSessionService(redis)
    await sessions.update_heartbeat("runner-1")
    for trial in range(100):
        code = (await codes[0].register("runner-1")).code
        racers = [codes[1 + i % (CLIENTS - 1)] for i in range(3)]
        apps = [f"app-{trial}-{i}" for i in range(3)]
        if method == "redeem":
            results = await asyncio.gather(
                *(svc.redeem(code.lower(), app) for svc, app in zip(racers, apps, strict=True))
            )
            winners = [r for r in results if r.status is RedeemStatus.PAIRED]
            losers = [r for r in results if r.status is RedeemStatus.INVALID_CODE]
            assert len(winners) == 1 and len(losers) == 2, results
            assert winners[0].runner_id == "runner-1"
            paired = [a for a in apps if await sessions.get_session(a) is not None]
            assert len(paired) == 1
        else:
            got = await asyncio.gather(*(svc.consume(code) for svc in racers))
            assert got.count("runner-1") == 1 and got.count(None) == 2, got
        assert await codes[0].lookup(code) is None
        assert await codes[0].current_code("runner-1") is None
    if method == "redeem":
        assert len(await sessions.get_apps_by_runner_id("runner-1")) == 100
