from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from pairing.store import Redis, connect
from pairing.store.cluster import cluster_client
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    """One private redis-server for the session; tests share it and flush between."""
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    return redis_proc.url


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server for one test alone, which the test may stop and restart."""
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.close()


_memory_counter = 0


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, redis_proc: RedisProcess) -> AsyncIterator[Redis]:
    """A flushed client on the real server and, as a second run, on the embedded store."""
    global _memory_counter
    if request.param == "redis":
        client = connect(redis_proc.url)
    else:
        _memory_counter += 1
        client = connect(f"memory://test-{_memory_counter}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis(redis_proc: RedisProcess) -> AsyncIterator[Redis]:
    """A flushed client on the real server only."""
    client = connect(redis_proc.url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


# -- gateway fixtures -----------------------------------------------------------------------

from collections.abc import AsyncIterator as _AsyncIterator  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from aiohttp.test_utils import TestServer  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from tests.support.gateways import TEST_CONFIG, Client, RunningGateway, merged  # noqa: E402


@pytest.fixture
async def start_gateway(
    redis_proc: RedisProcess,
) -> _AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Start in-process gateways (real sockets, real Redis); each call is one replica."""
    servers: list[TestServer] = []
    flushed = False

    async def start(config: dict[str, Any] | None = None, **kwargs: Any) -> RunningGateway:
        nonlocal flushed
        cfg = merged(TEST_CONFIG, config or {})
        cfg.setdefault("redis_url", redis_proc.url)
        if not flushed and cfg["redis_url"] == redis_proc.url:
            client = connect(redis_proc.url)
            await client.flushdb()
            await client.aclose()
            flushed = True
        settings = load_settings(None, env={}, overrides=_flatten(cfg))
        app = create_app(settings, **kwargs)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return RunningGateway(app, server)

    yield start
    for server in reversed(servers):
        await _close_or_dump(server)


async def _close_or_dump(server: TestServer, timeout: float = 30.0) -> None:
    """Close a gateway; if that hangs, fail with every task's stack (a hung shutdown is a bug
    to see, not a test timeout to guess at)."""
    import asyncio
    import io

    try:
        async with asyncio.timeout(timeout):
            await server.close()
    except TimeoutError:
        out = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=out)
        pytest.fail(f"gateway shutdown hung for {timeout:.0f} s; tasks:\n{out.getvalue()}")


def _flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture
async def clients() -> _AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Connected test clients, all closed at the end of the test."""
    made: list[Client] = []

    async def make(url: str, *, auth: Any = None, transports: list[str] | None = None) -> Client:
        client = Client(reconnection=False)
        made.append(client)
        return await client.connect(url, auth=auth, transports=transports)

    yield make
    for client in made:
        await client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    """One private 3-master, 3-replica Redis Cluster for the session, shared by tests."""
    cluster = RedisClusterProcess()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
async def cluster_redis(redis_cluster: RedisClusterProcess) -> AsyncIterator[RedisCluster]:
    """A client on the session's Redis Cluster (as ``connect`` builds it for a cluster URL,
    slot map loaded), every master flushed before and after the test."""
    client = cluster_client(redis_cluster.url)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await client.aclose()


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterProcess]:
    """A Redis Cluster for one test alone, whose masters the test may kill."""
    cluster = RedisClusterProcess()
    cluster.start()
    yield cluster
    cluster.close()
