"""Hostile traffic against a gateway process on its own redis-server: no leak, no hang.

- 1,000 long-polling sessions that POST a noop, then end (half closed by the client, half
  abandoned until their ping timeout): the process's RSS ends where it was.
- Generated hostile sessions (tests/support/fuzz.py; up to four at once) for
  ``FUZZ_SECONDS`` (20 here; ``make fuzz``: 60) beside a canary app/runner pair: every answer
  well-formed, the canary's commands and outputs all delivered in order, the process alive,
  RSS growth < 32 MiB, Redis bounded, no traceback in the log. The seed is printed
  (``FUZZ_SEED`` replays it).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import aiohttp
import pytest
import redis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.support.events import SLOW_HEARTBEAT
from tests.support.fuzz import (
    FUZZ_MAX_PAYLOAD,
    Canary,
    LoopThread,
    Script,
    play,
    scripts,
)
from tests.support.gateways import GatewayProcess, merged
from tests.support.hostile import (
    ANSWER_TIMEOUT_S,
    http_session,
    log_problems,
    open_polling,
    poll,
    post,
    rss_bytes,
)
from tests.support.redis_server import RedisProcess

MIB = 1024 * 1024
CONFIG = merged(
    SLOW_HEARTBEAT,
    {
        "socketio": {"max_payload_bytes": FUZZ_MAX_PAYLOAD},
        "rate_limit": {"pair_failures": 100_000},
    },
)


@pytest.fixture
def lone_gateway(own_redis: RedisProcess) -> Iterator[GatewayProcess]:
    """A gateway process on a redis-server of its own (so its Redis use is measured alone)."""
    gw = GatewayProcess(own_redis.url, CONFIG)
    gw.start()
    yield gw
    gw.terminate()
    print("--- gateway log (tail) ---\n" + "\n".join(gw.log().splitlines()[-20:]))


def _pid(gw: GatewayProcess) -> int:
    assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"
    return gw.proc.pid


async def _noop_sessions(http: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    """``count`` polling sessions that each POST a noop (answered at once); every other one
    is then closed by its client, the rest abandoned. Returns the abandoned sids."""
    abandoned: list[str] = []

    async def one(i: int) -> None:
        sid = await open_polling(http, url)
        assert await post(http, url, sid, "6") == 200
        if i % 2:
            assert await post(http, url, sid, "1") == 200
        else:
            abandoned.append(sid)

    for start in range(0, count, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 50, count))))
    return abandoned


async def _until_gone(http: aiohttp.ClientSession, url: str, sids: list[str]) -> None:
    """Wait until the server has ended each session (a GET for it is a 400)."""
    deadline = time.monotonic() + 120
    pending = list(sids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} abandoned sessions never ended"
        still = []
        for start in range(0, len(pending), 50):
            batch = pending[start : start + 50]
            statuses = await asyncio.gather(*(poll(http, url, sid) for sid in batch))
            still += [
                sid for sid, (status, _) in zip(batch, statuses, strict=True) if status != 400
            ]
        pending = still


async def test_a_thousand_noop_sessions_leave_rss_where_it_was(
    lone_gateway: GatewayProcess,
) -> None:
    url = lone_gateway.url
    async with http_session() as http:
        # warm up: allocator pools, caches and code paths the measured round reuses
        await _until_gone(http, url, await _noop_sessions(http, url, 300))
        before = rss_bytes(_pid(lone_gateway))
        await _until_gone(http, url, await _noop_sessions(http, url, 1000))
        after = rss_bytes(_pid(lone_gateway))
    growth = after - before
    print(f"RSS before {before / MIB:.1f} MiB, after 1,000 sessions {after / MIB:.1f} MiB")
    # a leak of the sessions (about 15 KiB each) would be 15 MiB; a generous bound
    assert growth < 6 * MIB, f"RSS grew {growth / MIB:.1f} MiB"
    assert not log_problems(lone_gateway.log())


def _fuzz_seconds() -> float:
    return float(os.environ.get("FUZZ_SECONDS", "20"))


def _fuzz_seed() -> int:
    value = os.environ.get("FUZZ_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**32)


def test_generated_hostile_traffic_beside_a_canary_pair(
    lone_gateway: GatewayProcess, own_redis: RedisProcess
) -> None:
    seconds, base_seed = _fuzz_seconds(), _fuzz_seed()
    print(f"\nfuzz: FUZZ_SECONDS={seconds:g} FUZZ_SEED={base_seed}")
    gw = lone_gateway
    loop = LoopThread()
    store = redis.Redis.from_url(own_redis.url)
    canary = Canary(gw.url, f"{base_seed:x}")

    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S))

    http = loop.run(make_session())
    sessions = 0
    try:
        loop.run(canary.start())

        def fuzz_round(round_seed: int, examples: int) -> None:
            @seed(round_seed)
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(scripts, min_size=1, max_size=4))
            def session(batch: list[Script]) -> None:
                """Up to four hostile sessions at once."""
                nonlocal sessions

                async def together() -> None:
                    await asyncio.gather(*(play(http, gw.url, script) for script in batch))

                loop.run(together(), timeout=4 * ANSWER_TIMEOUT_S)
                sessions += len(batch)
                assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"

            session()

        fuzz_round(base_seed, 10)  # warm up, then measure from here
        rss_start = rss_bytes(_pid(gw))
        started = time.monotonic()
        peak_keys, peak_memory = 0, 0
        round_no = 0
        while time.monotonic() - started < seconds:
            round_no += 1
            fuzz_round(base_seed + round_no, 10)
            info = store.info("memory")
            peak_keys = max(peak_keys, int(store.dbsize()))
            peak_memory = max(peak_memory, int(info["used_memory"]))
            assert not canary.failures, canary.failures
        loop.run(canary.stop())
        rss_end = rss_bytes(_pid(gw))
    finally:
        loop.run(http.close())
        loop.close()
        store.close()
    growth = rss_end - rss_start
    print(
        f"fuzz: {sessions} hostile sessions in {time.monotonic() - started:.0f} s "
        f"(seed {base_seed}); canary rounds {canary.rounds}; RSS {rss_start / MIB:.1f} -> "
        f"{rss_end / MIB:.1f} MiB; Redis peak {peak_keys} keys, {peak_memory / MIB:.1f} MiB"
    )
    assert not canary.failures, canary.failures
    assert canary.rounds > 0
    assert growth < 32 * MIB, f"RSS grew {growth / MIB:.1f} MiB (seed {base_seed})"
    assert peak_keys < 5_000 and peak_memory < 64 * MIB, (peak_keys, peak_memory)
    problems = log_problems(gw.log())
    assert not problems, f"seed {base_seed}:\n" + "\n".join(problems[:20])
