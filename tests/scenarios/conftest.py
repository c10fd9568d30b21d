"""Fixtures of the multi-process scenarios: gateway processes, heartbeat loops, and the store
each scenario runs on twice (one redis-server, then a Redis Cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support.backends import Backend
from tests.support.freeze_proxy import FreezingProxy
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess
from tests.support.replicas import Heartbeats


@pytest.fixture
async def beats() -> AsyncIterator[Heartbeats]:
    """Heartbeat loops for test runners, stopped at the end of the test."""
    hb = Heartbeats()
    yield hb
    await hb.stop()


@pytest.fixture
def gateway_procs() -> Iterator[Callable[..., Any]]:
    """Start ``python -m gateway`` processes (each call one); all stopped by pid at the end."""
    import os

    from tests.support.gateways import GatewayProcess

    started: list[GatewayProcess] = []

    def start(redis_url: str, config: dict[str, Any] | None = None) -> GatewayProcess:
        gw = GatewayProcess(redis_url, config or {})
        started.append(gw)
        gw.start()
        return gw

    yield start
    for gw in started:
        gw.terminate(timeout=10)  # no-op for one the test already stopped
        print(f"--- gateway {gw.url} log (tail) ---\n" + "\n".join(gw.log().splitlines()[-30:]))
        if gw.log_path:
            os.unlink(gw.log_path)


@pytest.fixture(params=["single", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The session's store, as one redis-server and, as a second run, a Redis Cluster."""
    if request.param == "single":
        return Backend(single=request.getfixturevalue("redis_proc"))
    return Backend(cluster=request.getfixturevalue("redis_cluster"))


@pytest.fixture(params=["single", "cluster"])
def own_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A store for one test alone, which it may stop, freeze and restart: a redis-server
    and, as a second run, a 3-master Redis Cluster (an outage there: every master down)."""
    if request.param == "single":
        proc = RedisProcess()
        proc.start()
        yield Backend(single=proc)
        proc.close()
    else:
        cluster = RedisClusterProcess()
        cluster.start()
        yield Backend(cluster=cluster)
        cluster.close()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[[int], Any]]:
    """Starts a ``FreezingProxy`` in front of a port (a client's network to freeze); every
    one started is closed at the end of the test."""
    made: list[FreezingProxy] = []

    async def make(port: int) -> FreezingProxy:
        proxy = await FreezingProxy(port).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.close()
