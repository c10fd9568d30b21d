"""Generated hostile Engine.IO / Socket.IO sessions against a real gateway process.

Every one of 100 sessions (tests/support/fuzz.py's ``scripts``: websocket or long-polling,
almost-right Socket.IO packets and plain garbage) must get only well-formed answers: HTTP 200
or 400, an ack of the contract's shape, CONNECT_ERROR ``{"message"}``, or a close; never a
hang (every session ends with a barrier that must be answered or find the session closed).
Afterwards the process is alive and its log holds no traceback, no ERROR line and no non-JSON
line. The long run beside a canary pair, with memory and Redis bounds, is
tests/scenarios/test_fuzz_gateway.py (``make fuzz``).
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.events import SLOW_HEARTBEAT
from tests.support.fuzz import FUZZ_MAX_PAYLOAD, LoopThread, Script, play, scripts
from tests.support.gateways import GatewayProcess, merged
from tests.support.hostile import ANSWER_TIMEOUT_S, log_problems
from tests.support.redis_server import RedisProcess

CONFIG = merged(
    SLOW_HEARTBEAT,
    {
        "socketio": {"max_payload_bytes": FUZZ_MAX_PAYLOAD},
        "rate_limit": {"pair_failures": 100_000},
    },
)


@pytest.fixture(scope="module")
def fuzzed(redis_proc: RedisProcess) -> Iterator[tuple[GatewayProcess, LoopThread, object]]:
    gw = GatewayProcess(redis_proc.url, CONFIG)
    gw.start()
    loop = LoopThread()

    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S))

    http = loop.run(make_session())
    yield gw, loop, http
    loop.run(http.close())
    loop.close()
    gw.terminate()
    print("--- gateway log (tail) ---\n" + "\n".join(gw.log().splitlines()[-30:]))


def test_generated_sessions_get_well_formed_answers(
    fuzzed: tuple[GatewayProcess, LoopThread, aiohttp.ClientSession],
) -> None:
    gw, loop, http = fuzzed

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(scripts)
    def session(script: Script) -> None:
        loop.run(play(http, gw.url, script), timeout=4 * ANSWER_TIMEOUT_S)
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"

    session()
    problems = log_problems(gw.log())
    assert not problems, "\n".join(problems[:20])
