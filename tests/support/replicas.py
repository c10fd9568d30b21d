"""Helpers for tests over several gateway processes: heartbeats, acks in flight, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

from pairing.store import Redis
from tests.support.gateways import Client, GatewayProcess


class Heartbeats:
    """Keeps registered runners alive the way a runner daemon does: one heartbeat at a time.

    Acks are recorded per runnerId; errors (a socket the server closed, a store outage)
    do not stop the loop, as a daemon would keep trying.
    """

    def __init__(self, interval_s: float = 0.3) -> None:
        self.interval_s = interval_s
        self.acks: dict[str, list[Any]] = {}
        self._tasks: dict[tuple[int, str], tuple[asyncio.Task[None], asyncio.Event]] = {}

    def start(self, client: Client, runner_id: str) -> None:
        key = (id(client), runner_id)
        if key in self._tasks:
            return
        self.acks.setdefault(runner_id, [])
        halt = asyncio.Event()
        self._tasks[key] = (asyncio.create_task(self._beat(client, runner_id, halt)), halt)

    async def _beat(self, client: Client, runner_id: str, halt: asyncio.Event) -> None:
        # ``halt`` as well as cancel: asyncio.wait_for in Python 3.11 can swallow a cancel
        # that arrives just as the ack does, which would leave this loop running.
        while not halt.is_set():
            await asyncio.sleep(self.interval_s)
            if not client.sio.connected or halt.is_set():
                return
            try:
                ack = await client.call("runner:heartbeat", {"runnerId": runner_id}, timeout=10)
            except Exception as exc:  # disconnected meanwhile, or no ack: keep trying
                ack = repr(exc)
            self.acks[runner_id].append(ack)

    async def stop(self, client: Client | None = None) -> None:
        for key in list(self._tasks):
            if client is None or key[0] == id(client):
                task, halt = self._tasks.pop(key)
                halt.set()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def collect(client: Client, event: str, n: int, timeout: float = 20) -> list[Any]:
    """The next ``n`` ``event``s of ``client``, in arrival order."""

    async def take() -> list[Any]:
        return [await client.queues[event].get() for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


async def get_status(url: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
    ):
        body = await resp.text()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"raw": body}
    return resp.status, parsed


async def wait_ready(gw: GatewayProcess, timeout: float = 15) -> float:
    """Poll ``/readyz`` until 200; returns how long it took. Fails with the last answer."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout:
        try:
            status, body = await get_status(gw.url + "/readyz", timeout=3)
            if status == 200:
                return time.monotonic() - started
            last = (status, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gw.url} not ready after {timeout}s: {last}\n{gw.log()[-3000:]}")


async def publish_calls(redis: Redis) -> int:
    """How many PUBLISH commands the server has run (INFO commandstats)."""
    stats = await redis.info("commandstats")
    entry = stats.get("cmdstat_publish")
    return int(entry["calls"]) if entry else 0


def bad_log_lines(gw: GatewayProcess) -> list[str]:
    """Log lines that mean something escaped: errors, tracebacks, unretrieved task errors."""
    bad = []
    for line in gw.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(line)  # not our JSON logging: a bare traceback or print
            continue
        if entry.get("level") in {"error", "critical"} or "exc" in entry:
            bad.append(line)
    return bad


async def register(client: Client, runner_id: str) -> dict[str, Any]:
    ack = await client.call("runner:register", {"runnerId": runner_id})
    assert ack.get("success") is True, ack
    return ack  # type: ignore[no-any-return]


async def pair(app: Client, runner: Client, runner_id: str) -> dict[str, Any]:
    """A fresh code from ``runner`` (re-registering), redeemed by ``app``; checks the event."""
    code = (await register(runner, runner_id))["pairingCode"]
    ack = await app.call("app:pair", {"pairingCode": code})
    assert ack.get("success") is True and ack["runnerId"] == runner_id, ack
    assert await runner.next("pairing:paired") == {"appSessionId": ack["appSessionId"]}
    return ack  # type: ignore[no-any-return]


def paired_online(runner_id: str) -> dict[str, Any]:
    """app:status of an app paired with ``runner_id``, which is online."""
    return {"success": True, "paired": True, "runnerId": runner_id, "runnerOnline": True}


#: app:status of an app paired with nobody.
UNPAIRED = {"success": True, "paired": False, "runnerId": None, "runnerOnline": False}


async def command_reaches(app: Client, app_id: str, runner: Client, data: Any) -> None:
    """app:command from ``app`` is acked and arrives at ``runner`` as terminal:input."""
    assert await app.call("app:command", {"data": data}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": app_id, "data": data}


async def output_reaches(runner: Client, runner_id: str, data: Any, apps: list[Client]) -> None:
    """runner:output is acked as delivered to ``apps``, and each gets it as terminal:output."""
    ack = await runner.call("runner:output", {"data": data})
    assert ack == {"success": True, "delivered": len(apps)}
    for app in apps:
        assert await app.next("terminal:output") == {"runnerId": runner_id, "data": data}


async def relay_both_ways(
    app: Client, runner: Client, app_id: str, runner_id: str, tag: str
) -> None:
    await command_reaches(app, app_id, runner, f"cmd-{tag}")
    await output_reaches(runner, runner_id, f"out-{tag}", [app])
