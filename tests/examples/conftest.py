"""The gateway process the examples run against."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pairing.store import connect
from tests.support.gateways import GatewayProcess
from tests.support.redis_server import RedisProcess


@pytest.fixture
async def gateway(redis_proc: RedisProcess) -> AsyncIterator[GatewayProcess]:
    """A gateway process on the session's (flushed) redis-server, with a heartbeat timeout
    longer than a restart, as in production (30 s): a runner is back before the sweeper would
    call it offline, so its pairings survive a crash or a gateway restart."""
    client = connect(redis_proc.url)
    await client.flushdb()
    await client.aclose()
    gw = GatewayProcess(redis_proc.url, {"heartbeat": {"timeout_s": 30, "ttl_s": 60}})
    gw.start()
    yield gw
    gw.terminate()
