"""Turn a ``redis_url`` into an asyncio Redis client.

``redis://``, ``rediss://`` and ``unix://`` give a real redis-py client (hiredis parser when
installed); ``memory://`` gives an in-process fakeredis server with Lua, so one process can run
with no Redis at all. Every client gets short socket timeouts so that an outage surfaces as an
error within a bounded time instead of a hang.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

MEMORY_SCHEME = "memory://"

Redis = aioredis.Redis


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_SCHEME)


def connect(
    url: str,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    max_connections: int | None = 64,
) -> Redis:
    """Build a client for ``url``; nothing is sent until the first command."""
    if is_memory_url(url):
        import fakeredis

        server = _memory_servers.setdefault(url, fakeredis.FakeServer())
        client: Redis = fakeredis.FakeAsyncRedis(server=server)
        return client
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported redis_url scheme: {url!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        # One quick retry covers a pooled connection that died with a Redis restart; more
        # retries would only stretch the time a caller waits during a real outage. Never
        # retry on a timeout: the server may have run the command and only answered late,
        # and the scripts are not idempotent (a retried redeem finds the code it just spent
        # and reports INVALID_CODE for an app it did pair; a retried hit counts twice).
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.01), 1, supported_errors=(RedisConnectionError,)
        ),
        "retry_on_error": [RedisConnectionError],
        "health_check_interval": 30,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    return aioredis.Redis.from_url(url, **options)


#: memory:// URLs name in-process servers, so two clients built from one URL share data
#: (the gateway's command client and its pub/sub listener).
_memory_servers: dict[str, Any] = {}
