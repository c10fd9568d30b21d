"""Connection state recovery on the wire, packet by packet (raw Socket.IO over websocket).

What socket.io-client does (tests/scenarios/test_js_recovery.py runs the real one) is done
here by hand, so that every case is reached: the CONNECT reply's pid, the offset as every
app event's last argument (none for runners), a CONNECT with pid and offset that restores
the session (same sid and pid, what was missed before the CONNECT reply, in order), and
each reason for a new session instead. Gateways are in-process, on the real redis-server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.support.gateways import Client, RunningGateway
from tests.support.replicas import register

StartGateway = Callable[..., Awaitable[RunningGateway]]
Connect = Callable[..., Awaitable[Client]]

APP = "recovery-raw-app-0123456789"
RID = "r-recovery-raw"
ON = {
    # the runner stays online without heartbeats for a test's length
    "heartbeat": {"interval_s": 0.5, "timeout_s": 30, "ttl_s": 60},
    "socketio": {"connection_state_recovery": True, "ping_interval_s": 5, "ping_timeout_s": 5},
}


class Raw:
    """One Socket.IO connection spoken by hand: events and acks as the frames carried them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[list[Any]] = []
        self.connect: dict[str, Any] | None = None
        #: Events received before the CONNECT reply (a restore's missed ones).
        self.before_connect: list[list[Any]] = []
        self._acks: dict[int, Any] = {}
        self._ids = 0

    async def _frame(self, timeout: float = 10) -> None:
        while True:
            frame = await self.ws.receive_str(timeout=timeout)
            if frame == "2":
                await self.ws.send_str("3")
                continue
            break
        if frame.startswith("40"):
            self.connect = json.loads(frame[2:])
            self.before_connect = list(self.events)
        elif frame.startswith("42"):
            self.events.append(json.loads(frame[2:]))
        elif frame.startswith("43"):
            body = frame[2:]
            digits = len(body) - len(body.lstrip("0123456789"))
            self._acks[int(body[:digits])] = json.loads(body[digits:])[0]
        elif frame.startswith("44"):
            raise AssertionError(f"connect refused: {frame}")

    async def until_connected(self) -> dict[str, Any]:
        while self.connect is None:
            await self._frame()
        return self.connect

    async def call(self, event: str, data: Any) -> Any:
        self._ids += 1
        await self.ws.send_str(f"42{self._ids}" + json.dumps([event, data]))
        while self._ids not in self._acks:
            await self._frame()
        return self._acks.pop(self._ids)

    async def named(self, name: str, count: int) -> list[list[Any]]:
        """The first ``count`` events ``name`` (each as [data, *more arguments])."""
        while sum(1 for e in self.events if e[0] == name) < count:
            await self._frame()
        return [e[1:] for e in self.events if e[0] == name][:count]


@pytest.fixture(params=["single", "cluster"])
def on(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Recovery on, over one redis-server and, as a second run, a Redis Cluster (flushed)."""
    if request.param == "single":
        return ON
    request.getfixturevalue("cluster_redis")  # every master flushed before and after
    return {**ON, "redis_url": request.getfixturevalue("redis_cluster").url}


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    session = aiohttp.ClientSession()
    opened: list[Raw] = []

    async def open_(gw: RunningGateway, auth: dict[str, Any] | None = None) -> Raw:
        url = gw.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        ws = await session.ws_connect(url)
        assert (await ws.receive_str(timeout=10)).startswith("0{")
        await ws.send_str("40" + (json.dumps(auth) if auth is not None else ""))
        conn = Raw(ws)
        opened.append(conn)
        await conn.until_connected()
        return conn

    yield open_
    for conn in opened:
        await conn.ws.close()
    await session.close()


async def cut(conn: Raw) -> None:
    """The network goes: the TCP connection ends without a Socket.IO or Engine.IO close."""
    transport = conn.ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()


async def paired_app(
    gw: RunningGateway, raw: Callable[..., Awaitable[Raw]], clients: Connect, **auth: Any
) -> tuple[Raw, Client]:
    runner = await clients(gw.url)
    code = (await register(runner, RID))["pairingCode"]
    app = await raw(gw, auth or None)
    ack = await app.call("app:pair", {"pairingCode": code})
    assert ack["success"] is True, ack
    await runner.next("pairing:paired")
    return app, runner


async def outputs(runner: Client, first: int, last: int) -> None:
    for i in range(first, last + 1):
        assert (await runner.call("runner:output", {"data": f"o{i}"}))["success"] is True


async def until_recorded_gone(gw: RunningGateway, sid: str) -> None:
    """Wait until the gateway handled the disconnect of ``sid`` (its record is then kept)."""
    from gateway.app import GATEWAY

    gateway = gw.app[GATEWAY]
    for _ in range(200):
        if sid not in gateway.conns:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{sid} never disconnected")


async def test_connect_reply_carries_a_pid_and_app_events_their_offset(
    start_gateway: StartGateway, raw: Callable[..., Awaitable[Raw]], clients: Connect
) -> None:
    gw = await start_gateway(ON)
    app, runner = await paired_app(gw, raw, clients, appSessionId=APP)
    assert app.connect is not None and set(app.connect) == {"sid", "pid"}
    assert len(app.connect["pid"]) == 32
    await outputs(runner, 1, 3)
    got = await app.named("terminal:output", 3)
    assert got == [[{"runnerId": RID, "data": f"o{i}", "seq": i}, str(i)] for i in range(1, 4)]
    # A runner's events carry one too (it names nothing: runners are not restored).
    assert (await app.call("app:command", {"data": "ls"}))["success"] is True
    assert await runner.next("terminal:input") == {"appSessionId": APP, "data": "ls"}
    assert runner.offsets["pairing:paired"] == ["0"]
    assert runner.offsets["terminal:input"] == ["0"]
    await runner.sio.disconnect()
    unpaired = await app.named("pairing:unpaired", 1)
    # any other event to an app carries the position of the last one it was sent
    assert unpaired == [[{"runnerId": RID, "reason": "RUNNER_DISCONNECTED"}, "3"]]


async def test_a_cut_connection_is_restored_with_what_it_missed_before_the_connect_reply(
    start_gateway: StartGateway,
    on: dict[str, Any],
    raw: Callable[..., Awaitable[Raw]],
    clients: Connect,
) -> None:
    gw = await start_gateway(on)
    app, runner = await paired_app(gw, raw, clients, appSessionId=APP)
    first = app.connect
    assert first is not None
    await outputs(runner, 1, 3)
    assert (await app.named("terminal:output", 3))[-1][-1] == "3"
    await cut(app)
    await until_recorded_gone(gw, first["sid"])
    await outputs(runner, 4, 6)  # while it is away: held

    again = await raw(gw, {"pid": first["pid"], "offset": "3"})
    assert again.connect == first  # same sid, same pid
    assert again.before_connect == [
        ["terminal:output", {"runnerId": RID, "data": f"o{i}", "seq": i}, str(i)]
        for i in range(4, 7)
    ]
    await outputs(runner, 7, 7)
    assert (await again.named("terminal:output", 4))[-1] == [
        {"runnerId": RID, "data": "o7", "seq": 7},
        "7",
    ]
    status = await again.call("app:status", {})
    assert status["paired"] is True and status["runnerId"] == RID
    assert recoveries(gw) == {"recovered": 1.0}


def recoveries(gw: RunningGateway) -> dict[str, float]:
    """gateway_connection_recoveries_total by result."""
    from gateway.app import METRICS

    found = {}
    for metric in gw.app[METRICS].recoveries.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[sample.labels["result"]] = sample.value
    return found


async def test_a_pid_without_offset_restores_from_where_the_session_started(
    start_gateway: StartGateway,
    on: dict[str, Any],
    raw: Callable[..., Awaitable[Raw]],
    clients: Connect,
) -> None:
    """socket.io-client sends no offset when it got no event: it missed everything since."""
    gw = await start_gateway(on)
    runner = await clients(gw.url)
    code = (await register(runner, RID))["pairingCode"]
    app = await raw(gw, {"appSessionId": APP})
    assert (await app.call("app:pair", {"pairingCode": code}))["success"] is True
    first = app.connect
    assert first is not None
    await cut(app)
    await until_recorded_gone(gw, first["sid"])
    await outputs(runner, 1, 2)
    again = await raw(gw, {"pid": first["pid"], "appSessionId": APP})
    assert again.connect == first
    assert [e[1]["seq"] for e in again.before_connect] == [1, 2]


async def test_a_server_assigned_app_keeps_its_id_through_a_restore(
    start_gateway: StartGateway, raw: Callable[..., Awaitable[Raw]], clients: Connect
) -> None:
    gw = await start_gateway(ON)
    app, runner = await paired_app(gw, raw, clients)  # no appSessionId: the server's
    first = app.connect
    assert first is not None
    await outputs(runner, 1, 1)
    await app.named("terminal:output", 1)
    await cut(app)
    await until_recorded_gone(gw, first["sid"])
    await outputs(runner, 2, 2)
    again = await raw(gw, {"pid": first["pid"], "offset": "1"})
    assert again.connect == first
    assert [e[1]["seq"] for e in again.before_connect] == [2]
    assert (await again.call("app:status", {}))["runnerId"] == RID


async def test_a_runners_connection_is_not_restored(
    start_gateway: StartGateway, raw: Callable[..., Awaitable[Raw]], clients: Connect
) -> None:
    """Its disconnect removed its pairings: nothing to restore, and its pid is dropped."""
    gw = await start_gateway(ON)
    runner = await raw(gw)
    ack = await runner.call("runner:register", {"runnerId": RID})
    assert ack["success"] is True
    first = runner.connect
    assert first is not None
    await cut(runner)
    await until_recorded_gone(gw, first["sid"])
    again = await raw(gw, {"pid": first["pid"], "offset": "0"})
    assert again.connect is not None and again.connect["sid"] != first["sid"]


@pytest.mark.parametrize(
    "case",
    [
        "unknown pid",
        "offset not the gateway's",
        "offset beyond the log",
        "another app's id",
        "missed more than the hold keeps",
        "the client left",
    ],
)
async def test_otherwise_a_new_session(
    case: str,
    start_gateway: StartGateway,
    raw: Callable[..., Awaitable[Raw]],
    clients: Connect,
) -> None:
    config = {**ON, "resume": {"max_messages": 2}}
    gw = await start_gateway(config)
    app, runner = await paired_app(gw, raw, clients, appSessionId=APP)
    first = app.connect
    assert first is not None
    await outputs(runner, 1, 2)
    await app.named("terminal:output", 2)
    if case == "the client left":
        await app.ws.send_str("41")  # a Socket.IO disconnect: it does not come back for it
    await cut(app)
    await until_recorded_gone(gw, first["sid"])
    await outputs(runner, 3, 5 if case == "missed more than the hold keeps" else 4)
    auth: dict[str, Any] = {"pid": first["pid"], "offset": "2"}
    if case == "unknown pid":
        auth["pid"] = "A" * 32
    elif case == "offset not the gateway's":
        auth["offset"] = "02"
    elif case == "offset beyond the log":
        auth["offset"] = "99"
    elif case == "another app's id":
        auth["appSessionId"] = "someone-else-0123456789"
    again = await raw(gw, auth)
    assert again.connect is not None
    assert again.connect["sid"] != first["sid"]
    assert again.connect["pid"] != first["pid"]
    assert again.before_connect == []
    assert recoveries(gw) == {"new": 1.0}


async def test_a_client_back_before_its_old_connection_ended_takes_it_over(
    start_gateway: StartGateway, raw: Callable[..., Awaitable[Raw]], clients: Connect
) -> None:
    """A phone on its new network reconnects before the gateway noticed the old one is dead
    (same replica: the old socket, with the same sid, is disconnected first)."""
    gw = await start_gateway(ON)
    app, runner = await paired_app(gw, raw, clients, appSessionId=APP)
    first = app.connect
    assert first is not None
    await outputs(runner, 1, 2)
    await app.named("terminal:output", 2)
    again = await raw(gw, {"pid": first["pid"], "offset": "1", "appSessionId": APP})
    assert again.connect == first
    assert [e[1]["seq"] for e in again.before_connect] == [2]
    await outputs(runner, 3, 3)
    assert [e[0]["seq"] for e in await again.named("terminal:output", 2)] == [2, 3]
    assert (await again.call("app:status", {}))["paired"] is True


async def test_restored_on_the_other_replica_while_the_old_connection_lives(
    start_gateway: StartGateway,
    on: dict[str, Any],
    raw: Callable[..., Awaitable[Raw]],
    clients: Connect,
) -> None:
    """The replica that still holds the old socket (same sid) drops it, and what it relayed
    to it meanwhile reaches the restored one once, in order."""
    a, b = await start_gateway(on), await start_gateway(on)
    app, runner = await paired_app(a, raw, clients, appSessionId=APP)
    first = app.connect
    assert first is not None
    await outputs(runner, 1, 2)
    await app.named("terminal:output", 2)
    streaming = asyncio.create_task(outputs(runner, 3, 40))
    again = await raw(b, {"pid": first["pid"], "offset": "2", "appSessionId": APP})
    assert again.connect == first
    await streaming
    got = await again.named("terminal:output", 38)
    assert [e[0]["seq"] for e in got] == list(range(3, 41))
    assert all(e[1] == str(e[0]["seq"]) for e in got)
    from gateway.app import GATEWAY

    for _ in range(200):
        if first["sid"] not in a.app[GATEWAY].conns:
            break
        await asyncio.sleep(0.02)
    assert first["sid"] not in a.app[GATEWAY].conns  # the old socket is gone from A
    assert first["sid"] in b.app[GATEWAY].conns


async def test_binary_output_carries_its_offset_too(
    start_gateway: StartGateway, clients: Connect
) -> None:
    """Data with bytes goes out as a binary event; the offset is still its last argument
    (python-socketio as the app: a handler taking every argument)."""
    import socketio

    gw = await start_gateway(ON)
    runner = await clients(gw.url)
    code = (await register(runner, RID))["pairingCode"]
    app = socketio.AsyncClient()
    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    @app.on("terminal:output")  # type: ignore[untyped-decorator]
    async def on_output(*args: Any) -> None:
        got.put_nowait(args)

    await app.connect(gw.url, auth={"appSessionId": APP}, transports=["websocket"])
    try:
        assert (await app.call("app:pair", {"pairingCode": code}))["success"] is True
        await runner.next("pairing:paired")
        ack = await runner.call("runner:output", {"data": b"\x00\xffbytes"})
        assert ack == {"success": True, "delivered": 1}
        args = await asyncio.wait_for(got.get(), 10)
        assert args == ({"runnerId": RID, "data": b"\x00\xffbytes", "seq": 1}, "1")
    finally:
        await app.disconnect()


def test_a_window_longer_than_the_hold_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from gateway.app import create_app
    from gateway.config import load_settings

    def start(**overrides: Any) -> str:
        caplog.clear()
        settings = load_settings(None, env={}, overrides={"redis_url": "memory://w", **overrides})
        with caplog.at_level(logging.WARNING, logger="gateway"):
            create_app(settings)
        return caplog.text

    on = "socketio.connection_state_recovery"
    assert "outlives the hold" in start(**{on: True, "socketio.max_disconnection_s": 600})
    assert "outlives the hold" in start(**{on: True, "resume.max_messages": 0})
    assert "outlives the hold" not in start(**{on: True})  # 120 s each by default
    assert "outlives the hold" not in start(**{"socketio.max_disconnection_s": 600})  # off
