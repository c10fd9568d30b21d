"""redis_url through Redis Sentinel: ``redis+sentinel://host:port/service/db``.

Private redis-server processes: a primary, a replica of it, and one sentinel (quorum 1)
watching them. Two gateway replicas reach Redis only through the sentinel; when the primary
dies and the sentinel promotes the replica, they keep serving, write to the new primary,
and deliver across replicas again.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from pairing.store import connect
from tests.support.gateways import Client, GatewayProcess
from tests.support.redis_server import RedisProcess, free_port

SERVICE = "pairing"


@dataclass
class SentinelProcess:
    """``redis-server --sentinel`` watching one primary, stopped by pid."""

    primary_port: int
    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sentinel-test-"))
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = Path(self.workdir) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server not found; make test installs it"
        self.proc = subprocess.Popen(
            [binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


@dataclass
class Topology:
    primary: RedisProcess
    replica: RedisProcess
    sentinel: SentinelProcess

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    async def command(self, port: int, *args: Any) -> Any:
        client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()


async def _topology(with_replica: bool) -> AsyncIterator[Topology]:
    primary, replica = RedisProcess(), RedisProcess()
    sentinel = SentinelProcess(primary.port)
    topo = Topology(primary, replica, sentinel)
    try:
        primary.start()
        if with_replica:
            replica.start()
            await topo.command(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))

            async def link_up() -> bool:
                info = await topo.command(replica.port, "INFO", "replication")
                return bool(info.get("master_link_status") == "up")

            await until(link_up, 10, "the replica is in sync")
        sentinel.start()

        async def ready() -> bool:
            if not with_replica:
                addr = await topo.command(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
                return bool(addr)
            replicas = await topo.command(sentinel.port, "SENTINEL", "REPLICAS", SERVICE)
            return any(
                "s_down" not in str(r) and str(replica.port) in str(r) for r in replicas or []
            )

        await until(ready, 15, "the sentinel knows the primary (and the replica)")
        yield topo
    finally:
        sentinel.stop()
        replica.close()
        primary.close()


@pytest.fixture
async def sentinel_only() -> AsyncIterator[Topology]:
    async for topo in _topology(with_replica=False):
        yield topo


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    async for topo in _topology(with_replica=True):
        yield topo


async def test_store_client_finds_the_primary_through_the_sentinel(
    sentinel_only: Topology,
) -> None:
    topology = sentinel_only
    client = connect(topology.url)
    try:
        await client.set("through-sentinel", "yes")
        assert await client.get("through-sentinel") == b"yes"
        info = await client.info("server")
        assert info["tcp_port"] == topology.primary.port
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:1",  # no service name
        "redis+sentinel://127.0.0.1/svc",  # no port
        "redis+sentinel://127.0.0.1:1/svc/x",  # db not a number
        "redis+sentinel://127.0.0.1:1/svc/0/extra",
    ],
)
def test_malformed_sentinel_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url"):
        connect(url)


async def test_gateways_follow_a_sentinel_failover(topology: Topology) -> None:
    # A heartbeat timeout longer than the failover, as in production: the runner (which
    # heartbeats only when the test says) must not go offline meanwhile.
    config = {"heartbeat": {"timeout_s": 30, "ttl_s": 60}}
    a = GatewayProcess(topology.url, config)
    b = GatewayProcess(topology.url, config)
    clients: list[Client] = []
    try:
        a.start()
        b.start()
        for gw in (a, b):
            await until(lambda gw=gw: _ready(gw), 10, "replica ready through the sentinel")
        runner = Client(reconnection=False)
        app = Client(reconnection=False)
        clients += [runner, app]
        await runner.connect(a.url)
        await app.connect(b.url, auth={"appSessionId": "sentinel-app-0123456789"})
        reg = await runner.call("runner:register", {"runnerId": "sentinel-runner"})
        assert (await app.call("app:pair", {"pairingCode": reg["pairingCode"]}))["success"]
        await runner.next("pairing:paired")

        # Make sure the pairing reached the replica, then the primary dies: the sentinel
        # sees it down after down-after-milliseconds (2 s) and promotes the replica.
        assert await topology.command(topology.primary.port, "WAIT", "1", "2000") == 1
        topology.primary.stop()

        async def promoted() -> bool:
            addr = await topology.command(
                topology.sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
            )
            return int(addr[1]) == topology.replica.port

        await until(promoted, 20, "the sentinel promoted the replica")

        # Writes succeed again (on the new primary: the old one is gone), the pairing made
        # before the failover is there, and delivery crosses replicas again.
        async def heartbeat_ok() -> bool:
            ack = await runner.call("runner:heartbeat", {"runnerId": "sentinel-runner"})
            return bool(ack.get("success"))

        await until(heartbeat_ok, 15, "a heartbeat is written after the failover")
        status = await app.call("app:status")
        assert status["paired"] is True and status["runnerOnline"] is True, status

        async def relayed() -> bool:
            ack = await app.call("app:command", {"data": "after failover"})
            if not ack.get("success"):
                return False
            msg = await runner.next("terminal:input", timeout=3)
            return bool(msg["data"] == "after failover")

        await until(relayed, 15, "an app:command crosses replicas after the failover")
    finally:
        for client in clients:
            await client.close()
        b.terminate()
        a.terminate()


async def _ready(gw: GatewayProcess) -> bool:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/readyz") as resp:
        return resp.status == 200
