"""The official JavaScript client (socket.io-client 4.x under Node) against a gateway process.

The whole pairing scenario of tests/clients/js/scenario.mjs (register, pair, command and output,
an unacknowledged burst in order, status, unpair, pair again, resume with the same
auth.appSessionId, runner disconnect) over websocket only, over long-polling with upgrade to
websocket, and over long-polling only.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.gateways import GatewayProcess
from tests.support.js import TRANSPORTS, check_scenario, node_deps, run_scenario
from tests.support.redis_server import RedisProcess

__all__ = ["node_deps"]  # the session fixture, imported so that pytest finds it here


@pytest.fixture(scope="module")
def shared_gateway(redis_proc: RedisProcess) -> Iterator[GatewayProcess]:
    """One gateway process for the module's tests."""
    gw = GatewayProcess(redis_proc.url)
    gw.start()
    yield gw
    gw.terminate()


@pytest.mark.parametrize("mode", list(TRANSPORTS))
@pytest.mark.usefixtures("redis")  # rate-limit counters and runners of earlier tests are gone
async def test_official_client_full_scenario(
    mode: str, shared_gateway: GatewayProcess, node_deps: str
) -> None:
    transport = TRANSPORTS[mode]
    runner_id = f"js-runner-{secrets.token_hex(4)}"
    app_id = f"js-app-{secrets.token_hex(8)}"
    config = {
        "runnerUrl": shared_gateway.url,
        "appUrl": shared_gateway.url,
        "transports": transport["transports"],
        "upgrade": transport.get("upgrade", True),
        "runnerId": runner_id,
        "appSessionId": app_id,
        # More than python-engineio's default 16 packets per long-polling POST.
        "burst": 40,
    }
    steps = await run_scenario(node_deps, config)
    check_scenario(steps, runner_id=runner_id, app_id=app_id, transport=transport)
    assert shared_gateway.proc is not None and shared_gateway.proc.poll() is None
