from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pairing.store import Redis, connect
from tests.redis_proc import RedisProcess


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
