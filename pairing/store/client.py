"""Turn a ``redis_url`` into an asyncio Redis client.

``redis://``, ``rediss://`` and ``unix://`` give a real redis-py client (hiredis parser when
installed); ``redis+sentinel://`` (``rediss+sentinel://`` for TLS to Redis) finds the primary
through Redis Sentinel and follows failovers; ``redis+cluster://`` (``rediss+cluster://``)
gives redis-py's cluster client (``pairing.store.cluster``); ``memory://`` gives an
in-process fakeredis server with Lua, so one process can run with no Redis at all. Every
client gets short socket timeouts so that an outage surfaces as an error within a bounded
time instead of a hang.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from pairing.store.autopipeline import AutoPipelineRedis, Durability

MEMORY_SCHEME = "memory://"
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

Redis = aioredis.Redis


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_SCHEME)


def lost_connection_retry() -> dict[str, Any]:
    """redis-py options for our one retry rule, shared by the single-node and cluster clients.

    One quick retry covers a pooled connection that died with a Redis restart; more retries
    would only stretch the time a caller waits during a real outage. Never retry on a
    timeout: the server may have run the command and only answered late, and the scripts
    are not idempotent (a retried redeem finds the code it just spent and reports
    INVALID_CODE for an app it did pair; a retried hit counts twice).
    """
    return {
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.01), 1, supported_errors=(RedisConnectionError,)
        ),
        "retry_on_error": [RedisConnectionError],
    }


def connect(
    url: str,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    max_connections: int | None = 64,
    durability: Durability | None = None,
) -> Redis:
    """Build a client for ``url``; nothing is sent until the first command.

    ``durability`` (``redis.wait_replicas``) makes the pipelined commands' writes wait for
    replicas; the embedded memory:// store has none and ignores it."""
    if is_memory_url(url):
        import fakeredis

        server = _memory_servers.setdefault(url, fakeredis.FakeServer())
        client: Redis = fakeredis.FakeAsyncRedis(server=server)
        return client
    if url.startswith(CLUSTER_SCHEMES):
        from pairing.store.cluster import cluster_client  # (it imports this module)

        # The services use only commands both clients have (EVALSHA, SCRIPT LOAD, GET, ...),
        # so a RedisCluster stands in for a Redis; the gateway checks for it where it
        # matters (pub/sub, readiness).
        return cast(
            Redis,
            cluster_client(
                url,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                max_connections=max_connections,
                durability=durability,
            ),
        )
    sentinel = url.startswith(SENTINEL_SCHEMES)
    if not sentinel and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported redis_url scheme: {url!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        **lost_connection_retry(),
        "health_check_interval": 30,
        # RESP2: replies stay positional with no push frames on a command connection, which
        # the pipelined link (pairing.store.autopipeline) matches to callers strictly in order.
        "protocol": 2,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    if sentinel:
        client = _sentinel_client(url, socket_timeout, connect_timeout, _unbounded(options))
    else:
        # A blocking pool: with more callers than connections, a caller waits (up to the
        # socket timeout) for a free connection instead of failing at once (MaxConnectionsError).
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=socket_timeout, **options)
        client = AutoPipelineRedis.from_pool(pool)
    assert isinstance(client, AutoPipelineRedis)
    client.durability = durability
    return client


def is_cluster(client: Redis) -> bool:
    """Whether ``client`` is a Redis Cluster client (``connect`` of a cluster URL)."""
    return isinstance(client, RedisCluster)


async def ping(client: Redis) -> bool:
    """The store answers: the server, or on a cluster at least one master.

    On a cluster a master's failure takes only its slots away, and only until its replica is
    promoted; every gateway replica sees the same, so taking replicas out of service would
    not move that traffic anywhere better, while the other masters' slots are served as
    usual. With every master silent, the first error is raised (an outage, as on one Redis).
    """
    if isinstance(client, RedisCluster):
        from pairing.store.cluster import any_master_answers  # (it imports this module)

        return await any_master_answers(client)
    return bool(await client.ping())


class _SentinelRedis(AutoPipelineRedis):
    """A client of the primary that also closes its connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def _sentinel_client(
    url: str, socket_timeout: float, connect_timeout: float, options: dict[str, Any]
) -> Redis:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``.

    The password (and user) are the Redis primary's; ``?sentinel_password=`` authenticates
    to the sentinels. The client asks the sentinels for the primary on every new connection,
    so after a failover it reconnects to the new one.
    """
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"redis_url: sentinel address {entry!r} must be host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("redis_url: a sentinel URL ends in /service_name or /service_name/db")
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    query = parse_qs(parts.query)
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query["sentinel_password"][0]
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: _SentinelRedis = manager.master_for(
        path[0],
        redis_class=_SentinelRedis,
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None,
        password=unquote(password) or None,
        ssl=url.startswith("rediss+"),
        **options,
    )
    client.sentinel_manager = manager
    return client


def _unbounded(options: dict[str, Any]) -> dict[str, Any]:
    """Sentinel pools cannot block for a free connection; a cap would fail callers instead."""
    return {k: v for k, v in options.items() if k != "max_connections"}


#: memory:// URLs name in-process servers, so two clients built from one URL share data
#: (the gateway's command client and its pub/sub listener).
_memory_servers: dict[str, Any] = {}
