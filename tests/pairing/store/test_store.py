"""pairing.store.connect: URL schemes and the embedded memory:// store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from pairing import PairingCodeService, PairingSessionService, RateLimitService, connect
from pairing.store import Redis, is_cluster, is_memory_url
from tests.support.redis_server import RedisProcess


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "mongodb://x", "127.0.0.1:6379", "", "memory:/x"]
)
def test_unknown_schemes_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported redis_url scheme"):
        connect(url)


@pytest.mark.parametrize("url", ["redis+cluster://h:7000,h:7001", "rediss+cluster://h:7000"])
async def test_cluster_urls_give_a_lazy_cluster_client(url: str) -> None:
    client = connect(url)  # nothing is sent yet: the nodes need not exist
    try:
        assert isinstance(client, RedisCluster) and is_cluster(client)
        startup = client.nodes_manager.startup_nodes
        assert set(startup) <= {"h:7000", "h:7001"} and "h:7000" in startup
        kwargs = startup["h:7000"].connection_kwargs
        # The single-node client's timeouts, so an outage surfaces within the same bound.
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.0, 1.0)
        assert (startup["h:7000"].connection_class is SSLConnection) == url.startswith("rediss+")
    finally:
        await client.aclose()


@pytest.mark.parametrize("url", ["redis+cluster://h", "redis+cluster://h:1/2"])
def test_malformed_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url: "):
        connect(url)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "rediss://h:6380/1", "unix:///tmp/r.sock"]
)
async def test_redis_schemes_give_a_lazy_client(url: str) -> None:
    client = connect(url)  # nothing is sent yet, so an unreachable address is fine
    try:
        assert isinstance(client, aioredis.Redis)
    finally:
        await client.aclose()


async def test_same_memory_url_shares_data_and_others_do_not() -> None:
    name = f"memory://store-test-{uuid.uuid4().hex}"
    first, second, other = connect(name), connect(name), connect(name + "-other")
    try:
        assert is_memory_url(name)
        await first.set("k", "v")
        assert await second.get("k") == b"v"
        assert await other.get("k") is None
        # the services work across the two clients too (scripts are server-side)
        await PairingSessionService(first).create_session("a1", "r1")
        assert await PairingSessionService(second).get_apps_by_runner_id("r1") == ["a1"]
        assert await PairingSessionService(other).get_apps_by_runner_id("r1") == []
    finally:
        for client in (first, second, other):
            await client.flushdb()
            await client.aclose()


async def test_real_server_url(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


#: Keeps the server busy for ARGV[1] microseconds (a stand-in for a slow server or network).
BUSY = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
repeat
  local t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1])
return 1
"""


async def _times_out_while_busy(
    admin: Redis,
    victim: Redis,
    call: Callable[[], Awaitable[object]],
    ran: Callable[[], Awaitable[bool]],
) -> None:
    """Run ``call`` while the server is stuck for 0.8 s. The victim's 0.5 s timeout strikes
    first; a retry (which the bug made) would connect and get its answer before its own
    timeout. Then wait until the server has run what the timed-out connection sent
    (``ran``), and a little more, in which a resent command would have run too."""
    await victim.ping()  # a connected client: the command itself, not a handshake, times out
    busy = asyncio.create_task(admin.eval(BUSY, 0, 800_000))
    await asyncio.sleep(0.1)  # the busy script goes first
    with pytest.raises(RedisTimeoutError):
        await call()
    assert await busy == 1
    deadline = time.monotonic() + 5
    while not await ran():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


async def test_a_timed_out_command_is_not_sent_again(own_redis: RedisProcess) -> None:
    """Regression: connect() used to retry on timeouts. The server ran both the late command
    and its retry: one failed pairing attempt counted twice, and a redeem whose answer came
    late was retried, found its own code spent and reported INVALID_CODE for a paired app."""
    admin = connect(own_redis.url, socket_timeout=5)
    victim = connect(own_redis.url, socket_timeout=0.5)
    try:
        limits = RateLimitService(victim)
        codes = PairingCodeService(victim)
        await limits.load_scripts()
        await codes.load_scripts()
        sessions = PairingSessionService(admin)
        await sessions.update_heartbeat("r1")
        code = (await codes.register("r1")).code

        async def hit_counted() -> bool:
            return await admin.get("ratelimit:app:a1") is not None

        async def app_paired() -> bool:
            return await sessions.get_session("app-1") is not None

        await _times_out_while_busy(
            admin, victim, lambda: limits.hit("ratelimit:app:a1"), hit_counted
        )
        assert await admin.get("ratelimit:app:a1") == b"1"

        await _times_out_while_busy(admin, victim, lambda: codes.redeem(code, "app-1"), app_paired)
        # the late command did pair the app (a timeout says nothing about that) ...
        session = await sessions.get_session("app-1")
        assert session is not None and session.runner_id == "r1"
        # ... and the victim client works again afterwards
        assert await limits.hit("ratelimit:app:a1") == [2]
    finally:
        await admin.aclose()
        await victim.aclose()


async def test_a_connection_lost_to_a_restart_is_retried(own_redis: RedisProcess) -> None:
    client = connect(own_redis.url)
    try:
        svc = PairingSessionService(client)
        await svc.create_session("app-1", "runner-1")  # a pooled connection is now open
        own_redis.stop()
        own_redis.start()
        # no persistence: the data is gone, but the call goes through on a new connection
        assert await svc.get_session("app-1") is None
        await svc.create_session("app-1", "runner-1")  # the script cache is empty too
        assert await svc.get_apps_by_runner_id("runner-1") == ["app-1"]
    finally:
        await client.aclose()


async def test_more_callers_than_connections_wait_instead_of_failing(redis_url: str) -> None:
    """A pool cap must queue callers: a burst of 64+ concurrent events is normal load."""
    client = connect(redis_url, max_connections=4)
    try:
        results = await asyncio.gather(
            *(client.incr("burst") for _ in range(300)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted(results) == list(range(1, 301))  # type: ignore[type-var]
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 4
    finally:
        await client.delete("burst")
        await client.aclose()
