"""A runner whose network drops without a clean close, simulated by freezing its process.

examples/runner.py runs in its own process and is frozen with SIGSTOP: its socket stays
open, but it answers no ping and sends no heartbeat. The gateway must notice within the
Socket.IO ping interval plus ping timeout (config ``socketio.ping_interval_s`` and
``ping_timeout_s``; 1 s + 1 s here), tell its app exactly once, and, after SIGCONT, let the
runner (which finds its connection gone) reconnect, register again, and be paired anew.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from pairing.store import Redis
from tests.support.examples import RunnerProcess
from tests.support.gateways import TEST_CONFIG, Client, GatewayProcess, merged
from tests.support.redis_server import RedisProcess

_SIO = TEST_CONFIG["socketio"]
PING_CYCLE_S = _SIO["ping_interval_s"] + _SIO["ping_timeout_s"]
#: Allowed on top of the ping cycle for the disconnect handler, Redis and the app's delivery.
SLACK_S = 1.5

#: "ping": the heartbeat timeout (5 s) is longer than the ping cycle, so the Socket.IO ping
#: is what finds the frozen runner: RUNNER_DISCONNECTED. "ping+sweeper": the test timings
#: (heartbeat timeout 1.5 s, sweep every 0.3 s) let the heartbeat sweeper find it too, at
#: about the same time: both paths fire and the app must still hear it once.
VARIANTS: dict[str, dict[str, Any]] = {
    "ping": {"heartbeat": {"interval_s": 0.5, "timeout_s": 5, "ttl_s": 10}},
    "ping+sweeper": {},
}


async def connected_runners(gw: GatewayProcess) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("gateway_connected_runners "):
                return float(line.split()[1])
    raise AssertionError("no gateway_connected_runners metric")


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_frozen_runner_is_noticed_once_and_comes_back(
    variant: str,
    redis_proc: RedisProcess,
    redis: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Callable[..., Awaitable[Client]],
) -> None:
    config = merged(TEST_CONFIG, VARIANTS[variant])
    assert config["socketio"]["ping_interval_s"] + config["socketio"]["ping_timeout_s"] == (
        PING_CYCLE_S
    )
    gw = gateway_procs(redis_proc.url, VARIANTS[variant])
    runner_id = f"frozen-{secrets.token_hex(4)}"
    runner = RunnerProcess(gw.url, runner_id, "--plain")  # the raw client below does not encrypt
    await runner.start()
    try:
        code, line = await runner.next_code()
        app = await clients(gw.url, auth={"appSessionId": f"frozen-app-{secrets.token_hex(8)}"})
        assert (await app.call("app:pair", {"pairingCode": code}))["success"] is True
        assert await connected_runners(gw) == 1

        runner.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        unpaired = await app.next("pairing:unpaired", timeout=PING_CYCLE_S + 10)
        noticed_after = time.monotonic() - frozen_at
        print(f"{variant}: noticed after {noticed_after:.2f} s ({unpaired['reason']})")
        assert unpaired["runnerId"] == runner_id
        if variant == "ping":
            assert unpaired["reason"] == "RUNNER_DISCONNECTED"
        else:
            assert unpaired["reason"] in ("RUNNER_DISCONNECTED", "RUNNER_OFFLINE")
        assert noticed_after <= PING_CYCLE_S + SLACK_S, f"noticed after {noticed_after:.2f} s"

        # The gateway has dropped the frozen socket (both paths have run by now) ...
        await until(
            lambda: _equals(connected_runners(gw), 0), PING_CYCLE_S + SLACK_S, "socket dropped"
        )
        # ... and no second notification follows, however the two paths raced.
        with pytest.raises(TimeoutError):
            await app.next("pairing:unpaired", timeout=1.0)
        status = await app.call("app:status")
        assert status["paired"] is False and status["runnerOnline"] is False

        # Thawed, the runner finds its connection gone, reconnects and registers again.
        runner.signal(signal.SIGCONT)
        new_code, _ = await runner.next_code(after=line + 1)
        assert new_code != code
        paired = await app.call("app:pair", {"pairingCode": new_code})
        assert paired == {
            "success": True,
            "runnerId": runner_id,
            "appSessionId": paired["appSessionId"],
        }
        status = await app.call("app:status")
        assert status == {
            "success": True,
            "paired": True,
            "runnerId": runner_id,
            "runnerOnline": True,
        }
        assert (await app.call("app:command", {"data": "are you back?"}))["success"] is True
        output = await app.next("terminal:output")
        assert output == {"runnerId": runner_id, "data": "echo: are you back?"}
        assert app.pending("pairing:unpaired") == 0
    finally:
        await runner.stop()
    print("\n".join(runner.lines))


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected
