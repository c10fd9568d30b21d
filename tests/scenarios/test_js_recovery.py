"""Socket.IO connection state recovery with the official client (socket.io-client 4.8).

The app (tests/clients/js/recovery.mjs) has no resume code: no lastSeq. Two gateway
processes share one redis-server; the app reaches them through a freezing TCP proxy
(tests.support.freeze_proxy) while a runner streams 300 outputs. The network freezes for
about 4 s (ping interval 1 s + timeout 3 s: both ends give the connection up); the client
reconnects by itself, to the same replica or the other, and is recovered: the same
``socket.id``, ``socket.recovered === true``, and every output once, in order, each with its
offset. Past ``max_disconnection_s`` it gets a new session (``recovered === false``) and
works. With the option off the CONNECT reply has no pid and events no extra argument.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pairing import keys
from pairing.recovery import decode_record
from pairing.store import Redis, connect
from tests.support.gateways import Client, GatewayProcess, emit_unacked
from tests.support.js import JS_DIR, node_deps
from tests.support.redis_server import RedisProcess, free_port
from tests.support.replicas import Heartbeats, register

__all__ = ["node_deps"]  # the session fixture, imported so that pytest finds it here

APP = "recovery-js-app-0123456789"
RID = "r-js-recovery"
Connect = Callable[..., Any]

#: Recovery on; the frozen connection is given up by both ends after about 4 s; the
#: runner's heartbeats keep it online throughout.
RECOVERY = {
    "heartbeat": {"interval_s": 0.5, "timeout_s": 20, "ttl_s": 40},
    "socketio": {
        "ping_interval_s": 1,
        "ping_timeout_s": 3,
        "connection_state_recovery": True,
        "max_disconnection_s": 120,
    },
}


class App:
    """recovery.mjs: its lines as they come, and commands on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._next = 0
        self._ids = 0

    @classmethod
    async def start(cls, node: str, url: str, app_session_id: str | None) -> App:
        config: dict[str, Any] = {"url": url, "timeoutMs": 120_000}
        if app_session_id is not None:
            config["appSessionId"] = app_session_id
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "recovery.mjs"),
            json.dumps(config),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        return cls(proc)

    async def until(self, event: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        """The next line of ``event`` matching ``match`` (lines before it are kept)."""

        async def read() -> dict[str, Any]:
            while True:
                while self._next < len(self.lines):
                    rec = self.lines[self._next]
                    self._next += 1
                    if rec["event"] == event and all(rec.get(k) == v for k, v in match.items()):
                        return rec
                assert self.proc.stdout is not None
                line = await self.proc.stdout.readline()
                assert line, "recovery.mjs ended early"
                rec = json.loads(line)
                assert rec["event"] != "error", rec
                self.lines.append(rec)

        return await asyncio.wait_for(read(), timeout)

    async def output(self, seq: int, timeout: float = 60) -> None:
        """Wait until terminal:output ``seq`` has come."""

        async def arrived() -> None:
            while not any(args[0]["seq"] >= seq for args in self.events("terminal:output")):
                await self.until("server_event", timeout=timeout, name="terminal:output")

        await asyncio.wait_for(arrived(), timeout)

    async def call(self, event: str, data: Any = None) -> Any:
        self._ids += 1
        cmd = {"id": self._ids, "emit": event, "data": data or {}}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        return (await self.until("ack", id=self._ids))["ack"]

    def events(self, name: str) -> list[list[Any]]:
        return [r["args"] for r in self.lines if r["event"] == "server_event" and r["name"] == name]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def store(redis_proc: RedisProcess) -> AsyncIterator[Redis]:
    client = connect(redis_proc.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def apps() -> AsyncIterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        await app.close()


async def stream(runner: Client, first: int, last: int) -> None:
    """runner:output o<first>..o<last>, unacked, then every ack."""
    acks = await emit_unacked(
        runner, "runner:output", [{"data": f"o{i}"} for i in range(first, last + 1)]
    )
    assert await asyncio.wait_for(asyncio.gather(*acks), 60) == [
        {"success": True, "delivered": 1}
    ] * (last - first + 1)


def check_outputs(app: App, last: int) -> None:
    """Every output 1..last exactly once, in order, each with its seq as its offset."""
    got = app.events("terminal:output")
    assert [args[0]["seq"] for args in got] == list(range(1, last + 1))
    assert [args[0]["data"] for args in got] == [f"o{i}" for i in range(1, last + 1)]
    assert all(len(args) == 2 and args[1] == str(args[0]["seq"]) for args in got)
    assert app.events("terminal:gap") == []


async def pid_records_of(store: Redis, app_session_id: str) -> int:
    found = 0
    async for key in store.scan_iter(match=keys.RECOVERY_PID_PREFIX + "*"):
        raw = await store.get(key)
        record = None if raw is None else decode_record(raw)
        if record is not None and record.app_session_id == app_session_id:
            found += 1
    return found


@pytest.mark.parametrize(
    ("where", "identity"),
    [
        ("same replica", "presented"),
        ("other replica", "presented"),
        ("other replica", "assigned"),
    ],
)
async def test_official_client_recovers_after_a_4s_freeze(
    where: str,
    identity: str,
    node_deps: str,
    redis_proc: RedisProcess,
    store: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Connect,
    beats: Heartbeats,
    proxies: Callable[[int], Any],
    apps: list[App],
) -> None:
    a, b = gateway_procs(redis_proc.url, RECOVERY), gateway_procs(redis_proc.url, RECOVERY)
    runner = await clients(a.url)
    code = (await register(runner, RID))["pairingCode"]
    beats.start(runner, RID)
    proxy = await proxies(a.port)
    app = await App.start(node_deps, proxy.url, APP if identity == "presented" else None)
    apps.append(app)

    first = await app.until("connect", n=1)
    assert first["recovered"] is False
    packet = (await app.until("connect_packet"))["data"]
    assert packet["sid"] == first["id"] and isinstance(packet["pid"], str)
    assert len(packet["pid"]) >= 32
    paired = await app.call("app:pair", {"pairingCode": code})
    assert paired["success"] is True
    assert await runner.next("pairing:paired") == {"appSessionId": paired["appSessionId"]}

    await stream(runner, 1, 100)
    await app.output(100)
    proxy.freeze()  # the network goes: nothing passes either way, nothing is closed
    if where == "other replica":
        proxy.upstream_port = b.port  # its next connection reaches the other replica
    await stream(runner, 101, 200)  # into the frozen network; the runner is not slowed
    live = asyncio.create_task(stream(runner, 201, 300))  # and on, while the app comes back

    lost = await app.until("disconnect", timeout=30)
    assert lost["reason"] in {"ping timeout", "transport close", "transport error"}
    again = await app.until("connect", n=2, timeout=30)
    assert again["recovered"] is True
    assert again["id"] == first["id"]
    await live
    await app.output(300)
    check_outputs(app, 300)

    # The recovered connection is the app's: its pairing and its commands work.
    status = await app.call("app:status")
    assert status == {"success": True, "paired": True, "runnerId": RID, "runnerOnline": True}
    assert await app.call("app:command", {"data": "ls"}) == {"success": True}
    got = await runner.next("terminal:input")
    assert got == {"appSessionId": paired["appSessionId"], "data": "ls"}
    proxy.cut()


async def test_past_max_disconnection_the_client_gets_a_new_session_and_works(
    node_deps: str,
    redis_proc: RedisProcess,
    store: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Connect,
    beats: Heartbeats,
    proxies: Callable[[int], Any],
    apps: list[App],
) -> None:
    config = {**RECOVERY, "socketio": {**RECOVERY["socketio"], "max_disconnection_s": 1}}
    a = gateway_procs(redis_proc.url, config)
    runner = await clients(a.url)
    code = (await register(runner, RID))["pairingCode"]
    beats.start(runner, RID)
    proxy = await proxies(a.port)
    app = await App.start(node_deps, proxy.url, APP)
    apps.append(app)
    first = await app.until("connect", n=1)
    assert (await app.call("app:pair", {"pairingCode": code}))["success"] is True
    await runner.next("pairing:paired")
    await stream(runner, 1, 10)
    await app.output(10)

    proxy.freeze()
    proxy.upstream_port = free_port()  # nothing listens: its reconnects fail meanwhile
    await app.until("disconnect", timeout=30)
    # The server gave the connection up, and the window after it passed: no record left.
    for _ in range(400):
        if await pid_records_of(store, APP) == 0:
            break
        await asyncio.sleep(0.05)
    assert await pid_records_of(store, APP) == 0
    await stream(runner, 11, 20)  # missed, and no longer recoverable
    proxy.upstream_port = a.port

    again = await app.until("connect", n=2, timeout=30)
    assert again["recovered"] is False
    assert again["id"] != first["id"]
    # A new session that works: the app's pairing is its appSessionId's, outputs flow.
    status = await app.call("app:status")
    assert status == {"success": True, "paired": True, "runnerId": RID, "runnerOnline": True}
    await stream(runner, 21, 25)
    await app.output(25)
    seqs = [args[0]["seq"] for args in app.events("terminal:output")]
    assert seqs == [*range(1, 11), *range(21, 26)]
    proxy.cut()


async def test_with_the_option_off_nothing_changes_on_the_wire(
    node_deps: str,
    redis_proc: RedisProcess,
    store: Redis,
    gateway_procs: Callable[..., GatewayProcess],
    clients: Connect,
    beats: Heartbeats,
    apps: list[App],
) -> None:
    config = {**RECOVERY, "socketio": {"ping_interval_s": 1, "ping_timeout_s": 3}}
    a = gateway_procs(redis_proc.url, config)
    runner = await clients(a.url)
    code = (await register(runner, RID))["pairingCode"]
    app = await App.start(node_deps, a.url, APP)
    apps.append(app)
    first = await app.until("connect", n=1)
    assert first["recovered"] is None  # (the client's false without a pid)
    assert (await app.until("connect_packet"))["data"] == {"sid": first["id"]}
    assert (await app.call("app:pair", {"pairingCode": code}))["success"] is True
    await runner.next("pairing:paired")
    await stream(runner, 1, 5)
    await app.output(5)
    got = app.events("terminal:output")
    assert [args for args in got] == [
        [{"runnerId": RID, "data": f"o{i}", "seq": i}] for i in range(1, 6)
    ]
    assert await pid_records_of(store, APP) == 0
    assert [k async for k in store.scan_iter(match=keys.RECOVERY_PID_PREFIX + "*")] == []
