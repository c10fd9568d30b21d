"""A reader that stops reading: memory stays bounded, it is cut off, its runner is not slowed.

The app sits behind a freezing TCP proxy (tests.support.freeze_proxy): frozen, it reads nothing, so
the gateway's writes to it back up as they would to a phone that lost its network without a
close. Its runner then streams 192 MiB of output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pairing.store import Redis
from tests.support.freeze_proxy import FreezingProxy
from tests.support.gateways import GatewayProcess, emit_unacked, watch_disconnect
from tests.support.redis_server import RedisProcess
from tests.support.replicas import get_status, pair

APP = "slow-reader-0123456789abcdef"
RID = "r-streams"
CHUNK = "x" * 65536
TOTAL = 192 * 1024 * 1024
WINDOW = 16
MIB = 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def metric(gw: GatewayProcess, name: str) -> float:
    _, body = await get_status(gw.url + "/metrics")
    for line in body["raw"].splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_stalled_reader_is_cut_and_costs_bounded_memory(
    redis_proc: RedisProcess,
    redis: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Callable[..., Any],
) -> None:
    gw = gateway_procs(
        redis_proc.url,
        {
            "heartbeat": {"interval_s": 0.5, "timeout_s": 30, "ttl_s": 60},
            "socketio": {"ping_interval_s": 30, "ping_timeout_s": 30},
            "log_level": "warning",
        },
    )
    assert gw.proc is not None
    proxy = await FreezingProxy(gw.port).start()
    runner = await clients(gw.url)
    app = await clients(proxy.url, auth={"appSessionId": APP})
    await pair(app, runner, RID)
    cut = watch_disconnect(app)

    # Warm up with the app reading, so first-use allocations are not charged to the stall.
    acks = await emit_unacked(runner, "runner:output", [{"data": CHUNK}] * 64)
    await asyncio.wait_for(asyncio.gather(*acks), 60)
    for _ in range(64):
        await app.next("terminal:output", timeout=30)
    rss_before = rss(gw.proc.pid)
    redis_before = int((await redis.info("memory"))["used_memory"])

    proxy.freeze()
    peaks = {"rss": rss_before, "redis": redis_before}
    beats: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        assert gw.proc is not None
        while not done.is_set():
            peaks["rss"] = max(peaks["rss"], rss(gw.proc.pid))
            used = int((await redis.info("memory"))["used_memory"])
            peaks["redis"] = max(peaks["redis"], used)
            await asyncio.sleep(0.05)

    async def heartbeat() -> None:
        while not done.is_set():
            started = time.monotonic()
            ack = await runner.call("runner:heartbeat", {"runnerId": RID}, timeout=10)
            beats.append(time.monotonic() - started)
            assert ack == {"success": True}
            await asyncio.sleep(0.1)

    samplers = [asyncio.create_task(sample()), asyncio.create_task(heartbeat())]
    sent = 0
    in_flight: list[asyncio.Future[Any]] = []
    while sent < TOTAL:
        in_flight += await emit_unacked(runner, "runner:output", [{"data": CHUNK}])
        sent += len(CHUNK)
        if len(in_flight) >= WINDOW:
            ack = await asyncio.wait_for(in_flight.pop(0), 30)
            assert ack == {"success": True, "delivered": 1}, ack
    for fut in in_flight:
        assert await asyncio.wait_for(fut, 30) == {"success": True, "delivered": 1}
    done.set()
    await asyncio.gather(*samplers)

    assert await metric(gw, "gateway_slow_reader_cuts_total") == 1
    assert await metric(gw, "gateway_connected_apps") == 0  # its socket ended on the server
    grew_rss, grew_redis = peaks["rss"] - rss_before, peaks["redis"] - redis_before
    print(
        f"\nstalled reader: RSS +{grew_rss / MIB:.1f} MiB, Redis +{grew_redis / MIB:.1f} MiB, "
        f"slowest of {len(beats)} heartbeat acks {max(beats) * 1000:.0f} ms"
    )
    assert grew_rss < 64 * MIB, f"replica RSS grew {grew_rss / MIB:.1f} MiB"
    assert grew_redis < 32 * MIB, f"Redis grew {grew_redis / MIB:.1f} MiB"
    assert beats and max(beats) < 1.0, f"slowest heartbeat ack {max(beats):.3f} s"

    # The client sees a network failure once its network comes back (the cut connection).
    proxy.cut()
    await asyncio.wait_for(cut.wait(), 30)
    await proxy.close()
