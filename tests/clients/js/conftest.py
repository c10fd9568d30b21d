"""Fixtures of the E2E JavaScript module's tests: a redis-server of the test's own, every
command it receives recorded, and a gateway process on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateways import GatewayProcess
from tests.support.js_e2e import RecordedMonitor, e2e_node
from tests.support.redis_server import RedisProcess

__all__ = ["e2e_node"]  # the session fixture, imported so that pytest finds it here


@pytest.fixture
def monitored_redis(tmp_path: Path) -> Iterator[RecordedMonitor]:
    """A redis-server for this test alone, with MONITOR recording from its start."""
    redis = RedisProcess()
    redis.start()
    monitor = RecordedMonitor(redis.port, tmp_path / "monitor.txt")
    try:
        monitor.start()
        yield monitor
    finally:
        monitor.stop()
        redis.close()


@pytest.fixture
def monitored_gateway(monitored_redis: RecordedMonitor) -> Iterator[GatewayProcess]:
    """A gateway process on the monitored redis-server."""
    gw = GatewayProcess(f"redis://127.0.0.1:{monitored_redis.port}/0")
    gw.start()
    yield gw
    gw.terminate()
