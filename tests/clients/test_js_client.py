"""The official JavaScript client (socket.io-client 4.x under Node) against a gateway process.

The whole pairing scenario of tests/clients/js/scenario.mjs (register, pair, command and output,
an unacknowledged burst in order, status, unpair, pair again, resume with the same
auth.appSessionId, runner disconnect) over websocket only, over long-polling with upgrade to
websocket, and over long-polling only.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from pairing.store import connect
from tests.support.gateways import GatewayProcess
from tests.support.js import TRANSPORTS, check_scenario, node_deps, run_scenario
from tests.support.redis_server import RedisProcess

__all__ = ["node_deps"]  # the session fixture, imported so that pytest finds it here


@pytest.fixture(scope="module")
def gateway(redis_proc: RedisProcess) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(redis_proc.url)
    gw.start()
    yield gw
    gw.terminate()


@pytest.fixture
async def flushed(redis_proc: RedisProcess) -> AsyncIterator[None]:
    """Rate-limit counters and runners of earlier tests must not leak into this one."""
    client = connect(redis_proc.url)
    await client.flushdb()
    await client.aclose()
    yield


@pytest.mark.parametrize("mode", list(TRANSPORTS))
async def test_official_client_full_scenario(
    mode: str, gateway: GatewayProcess, node_deps: str, flushed: None
) -> None:
    transport = TRANSPORTS[mode]
    runner_id = f"js-runner-{secrets.token_hex(4)}"
    app_id = f"js-app-{secrets.token_hex(8)}"
    config = {
        "runnerUrl": gateway.url,
        "appUrl": gateway.url,
        "transports": transport["transports"],
        "upgrade": transport.get("upgrade", True),
        "runnerId": runner_id,
        "appSessionId": app_id,
        # More than python-engineio's default 16 packets per long-polling POST.
        "burst": 40,
    }
    steps = await run_scenario(node_deps, config)
    check_scenario(steps, runner_id=runner_id, app_id=app_id, transport=transport)
    assert gateway.proc is not None and gateway.proc.poll() is None
