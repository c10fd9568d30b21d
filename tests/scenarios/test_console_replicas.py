"""The operator console across replicas: two gateway processes on one Redis; a runner and an
app on one, the console's data read from the other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.events import app_id, pair, register
from tests.support.gateways import Client
from tests.support.redis_server import RedisProcess
from tests.support.replicas import Heartbeats

TOKEN = "console-token-for-the-replica-test-0123"


async def get(url: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
    ):
        assert resp.status == 200, (path, resp.status)
        return await resp.json()


async def until(check: Callable[[], Any], timeout: float = 30) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)


async def test_console_on_one_replica_shows_the_other_replicas_runner(
    redis_proc: RedisProcess, gateway_procs: Callable[..., Any], beats: Heartbeats
) -> None:
    config = {"console": {"token": TOKEN, "report_interval_s": 0.3}}
    a = gateway_procs(redis_proc.url, config)
    b = gateway_procs(redis_proc.url, config)
    replicas = await until(
        lambda: _replicas(b.url, 2), timeout=30
    )  # both replicas reported themselves
    runner, app = Client(), Client()
    try:
        await runner.connect(a.url)
        ack = await register(runner, "console-laptop")
        beats.start(runner, "console-laptop")
        await app.connect(a.url, auth={"appSessionId": app_id("console")})
        await pair(app, ack["pairingCode"])

        async def seen() -> Any:
            body = await get(b.url, "/console/api/runners")
            listed = [r for r in body["runners"] if r["runnerId"] == "console-laptop"]
            return listed[0] if listed and listed[0]["since"] else None

        listed = await until(seen)
        # it is connected to a, whose report gave the time it arrived there
        by_id = {r["replicaId"]: r for r in replicas}
        assert listed["replica"] in by_id

        async def holder_counts() -> Any:
            report = (await get(b.url, "/console/api/replicas"))["replicas"]
            holder = next(r for r in report if r["replicaId"] == listed["replica"])
            return (holder["runners"], holder["apps"]) == (1, 1)

        await until(holder_counts)  # a's next report counts the app too
        assert listed["apps"] == [app_id("console")[:8] + "..."]
        pairings = (await get(b.url, "/console/api/pairings"))["pairings"]
        assert [(p["app"], p["runnerId"]) for p in pairings] == [
            (app_id("console")[:8] + "...", "console-laptop")
        ]
        history = (await get(b.url, "/console/api/history"))["entries"]
        assert any(e["event"] == "paired" and e["runnerId"] == "console-laptop" for e in history)
    finally:
        await app.close()
        await runner.close()


async def _replicas(url: str, n: int) -> Any:
    body = await get(url, "/console/api/replicas")
    up = [r for r in body["replicas"] if r["status"] == "up"]
    return up if len(up) == n else None
