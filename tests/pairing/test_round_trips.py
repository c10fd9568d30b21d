"""Every service method costs one round trip: counted with MONITOR on the real server.

Commands run from inside Lua (``[0 lua]`` in MONITOR output) cost no round trip and are not
counted. ``docs/round-trips.md`` records the table these tests measure.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.app import STORE
from pairing import (
    AppPairingService,
    HistoryEvent,
    NewEntry,
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    RateLimitService,
    RunnerRegistration,
    RunnerRegistry,
)
from pairing.relay import IN, OUT, Recipient, RelayService
from pairing.store import Redis, connect
from tests.support.gateways import Client
from tests.support.paths import ROOT
from tests.support.redis_server import RedisProcess
from tests.support.replicas import pair
from tests.support.store_state import CommandMonitor, MonitoredCommand

DOC = ROOT / "docs" / "round-trips.md"


@dataclass
class Services:
    client: Redis
    sessions: PairingSessionService
    runners: RunnerRegistry
    codes: PairingCodeService
    limits: RateLimitService
    history: PairingHistoryService
    relay: RelayService
    pairing: AppPairingService
    registration: RunnerRegistration

    async def load_scripts(self) -> None:
        for svc in (
            self.sessions,
            self.runners,
            self.codes,
            self.limits,
            self.relay,
            self.history,
            self.pairing,
            self.registration,
        ):
            await svc.load_scripts()


@pytest.fixture
async def services(redis: Redis) -> Services:
    codes, limits, history = (
        PairingCodeService(redis),
        RateLimitService(redis),
        PairingHistoryService(redis),
    )
    s = Services(
        redis,
        PairingSessionService(redis),
        RunnerRegistry(redis),
        codes,
        limits,
        history,
        RelayService(redis),
        AppPairingService(redis, codes=codes, rate_limit=limits, history=history),
        RunnerRegistration(redis),
    )
    await s.load_scripts()
    return s


@pytest.fixture
async def monitor(redis_proc: RedisProcess) -> AsyncIterator[CommandMonitor]:
    async with CommandMonitor(redis_proc.url) as mon:
        yield mon


Setup = Callable[[Services], Awaitable[Any]]
Call = Callable[[Services], Awaitable[Any]]


async def _nothing(s: Services) -> None:
    return None


async def _paired(s: Services) -> None:
    """Two apps on runner r1 (online, owned by conn c1) with a live code, some history."""
    await s.runners.claim("r1", "c1")
    await s.sessions.create_session("a1", "r1")
    await s.sessions.create_session("a2", "r1")
    await s.codes.register("r1", "CODE-1")
    await s.history.record("paired", app_session_id="a1", runner_id="r1")


RUNNER_KEY = "k" * 22


async def _bound(s: Services) -> None:
    """r1 as _paired, bound to RUNNER_KEY."""
    await _paired(s)
    await s.registration.register("r1", "c1", address="a", runner_key=RUNNER_KEY)


async def _stale_runner(s: Services) -> None:
    await _paired(s)
    await s.client.set("runner:heartbeat:r1", "1", px=60_000)
    await s.client.zadd("runner:last_seen", {"r1": 1})


async def _held(s: Services) -> None:
    await _paired(s)
    for i in range(5):
        await _output(s)
        await s.relay.input("a1", "r1", None, b"", b"in%d" % i)


def _output(s: Services, apps: tuple[str, ...] = ("a1", "a2")) -> Awaitable[Any]:
    """One output to a1 (delivered by the caller) and a2 (published by the script)."""
    recipients = [
        Recipient(app, None if i == 0 else f"gateway:room:app:{app}", b"\x97")
        for i, app in enumerate(apps)
    ]
    return s.relay.output("r1", None, recipients, b"blob")


async def _paired_elsewhere(s: Services) -> None:
    await _paired(s)
    await s.sessions.update_heartbeat("r2")
    await s.sessions.create_session("a9", "r2")


async def _offline_code(s: Services) -> None:
    await s.codes.register("r5", "CODE-1")  # r5 never sent a heartbeat


async def _limited(s: Services) -> None:
    await _paired(s)
    await s.client.set("ratelimit:pair:app:a9", 5)


# (label, setup, call): the label is the row of the table in docs/round-trips.md.
CASES: list[tuple[str, Setup, Call]] = [
    (
        "PairingSessionService.create_session",
        _paired,
        lambda s: s.sessions.create_session("a1", "r2"),
    ),
    ("PairingSessionService.get_session", _paired, lambda s: s.sessions.get_session("a1")),
    ("PairingSessionService.remove_session", _paired, lambda s: s.sessions.remove_session("a1")),
    (
        "PairingSessionService.get_apps_by_runner_id",
        _paired,
        lambda s: s.sessions.get_apps_by_runner_id("r1"),
    ),
    (
        "PairingSessionService.is_runner_online",
        _paired,
        lambda s: s.sessions.is_runner_online("r1"),
    ),
    (
        "PairingSessionService.update_heartbeat",
        _paired,
        lambda s: s.sessions.update_heartbeat("r1"),
    ),
    (
        "PairingSessionService.remove_all_sessions_for_runner",
        _paired,
        lambda s: s.sessions.remove_all_sessions_for_runner("r1"),
    ),
    ("PairingSessionService.pair", _paired, lambda s: s.sessions.pair("a1", "r2")),
    ("PairingSessionService.unpair", _paired, lambda s: s.sessions.unpair("a1")),
    (
        "PairingSessionService.get_session_status",
        _paired,
        lambda s: s.sessions.get_session_status("a1"),
    ),
    ("RunnerRegistry.claim", _paired, lambda s: s.runners.claim("r1", "c2")),
    ("RunnerRegistry.heartbeat", _paired, lambda s: s.runners.heartbeat("r1", "c1")),
    ("RunnerRegistry.owner", _paired, lambda s: s.runners.owner("r1")),
    ("RunnerRegistry.release", _paired, lambda s: s.runners.release("r1", "c1")),
    ("RunnerRegistry.sweep", _stale_runner, lambda s: s.runners.sweep()),
    (
        "RunnerRegistration.register (proposed code, key)",
        _bound,
        lambda s: s.registration.register(
            "r1", "c2", address="a", code="CODE-2", runner_key=RUNNER_KEY
        ),
    ),
    (
        "RunnerRegistration.register (generated code, no key)",
        _paired,
        lambda s: s.registration.register("r1", "c2", address="a"),
    ),
    (
        "RunnerRegistration.register (refused: wrong key)",
        _bound,
        lambda s: s.registration.register("r1", "c2", address="a", runner_key="x" * 22),
    ),
    ("RunnerRegistration.release_key", _bound, lambda s: s.registration.release_key("r1")),
    (
        "PairingCodeService.register (proposed code)",
        _paired,
        lambda s: s.codes.register("r1", "CODE-2"),
    ),
    ("PairingCodeService.register (generated code)", _paired, lambda s: s.codes.register("r1")),
    ("PairingCodeService.lookup", _paired, lambda s: s.codes.lookup("CODE-1")),
    ("PairingCodeService.consume", _paired, lambda s: s.codes.consume("code-1")),
    ("PairingCodeService.revoke", _paired, lambda s: s.codes.revoke("r1")),
    ("PairingCodeService.current_code", _paired, lambda s: s.codes.current_code("r1")),
    ("PairingCodeService.redeem", _paired, lambda s: s.codes.redeem("code-1", "a9")),
    (
        "RateLimitService.is_limited (2 subjects)",
        _nothing,
        lambda s: s.limits.is_limited("ratelimit:x:1", "ratelimit:y:1"),
    ),
    (
        "RateLimitService.hit (2 subjects)",
        _nothing,
        lambda s: s.limits.hit("ratelimit:x:1", "ratelimit:y:1"),
    ),
    (
        "RateLimitService.reset (2 subjects)",
        _nothing,
        lambda s: s.limits.reset("ratelimit:x:1", "ratelimit:y:1"),
    ),
    (
        "PairingHistoryService.record",
        _nothing,
        lambda s: s.history.record("paired", app_session_id="a1", runner_id="r1"),
    ),
    (
        "PairingHistoryService.record_many (3 entries)",
        _nothing,
        lambda s: s.history.record_many(
            [
                NewEntry(HistoryEvent.UNPAIRED, app_session_id="a1", runner_id="r1"),
                NewEntry(HistoryEvent.UNPAIRED, app_session_id="a2", runner_id="r1"),
                NewEntry(HistoryEvent.RUNNER_OFFLINE, runner_id="r1"),
            ]
        ),
    ),
    ("PairingHistoryService.recent", _paired, lambda s: s.history.recent(10)),
    ("RelayService.output (2 apps, 1 published)", _paired, _output),
    ("RelayService.output (apps out of date)", _paired, lambda s: _output(s, ("a1",))),
    (
        "RelayService.input (published)",
        _paired,
        lambda s: s.relay.input("a1", "r1", "gateway:room:runner:r1", b"\x97", b"blob"),
    ),
    ("RelayService.held", _held, lambda s: s.relay.held("a1", OUT, 2)),
    (
        "RelayService.held (runner resume)",
        _held,
        lambda s: s.relay.held("a1", IN, 2, paired_with="r1"),
    ),
    (
        "PairingHistoryService.recent (filtered)",
        _paired,
        lambda s: s.history.recent(10, runner_id="r1"),
    ),
    # app:pair and app:unpair: limit, redemption, failure count and history in one script
    (
        "AppPairingService.pair (paired, moved from another runner)",
        _paired_elsewhere,
        lambda s: s.pairing.pair("code-1", "a9", address="10.0.0.1"),
    ),
    (
        "AppPairingService.pair (unknown code)",
        _paired,
        lambda s: s.pairing.pair("nope-1", "a9", address="10.0.0.1"),
    ),
    (
        "AppPairingService.pair (runner offline)",
        _offline_code,
        lambda s: s.pairing.pair("code-1", "a9", address="10.0.0.1"),
    ),
    (
        "AppPairingService.pair (rate limited)",
        _limited,
        lambda s: s.pairing.pair("code-1", "a9", address="10.0.0.1"),
    ),
    ("AppPairingService.unpair", _paired, lambda s: s.pairing.unpair("a1")),
]

#: What each call sends. Every method is one round trip; these are its command names.
EXPECTED: dict[str, list[str]] = {label: ["EVALSHA"] for label, _, _ in CASES}
EXPECTED.update(
    {
        "PairingSessionService.get_session": ["GET"],
        "PairingSessionService.get_apps_by_runner_id": ["SMEMBERS"],
        "RunnerRegistry.owner": ["GET"],
        "PairingCodeService.lookup": ["GET"],
        "PairingCodeService.current_code": ["GET"],
        "RateLimitService.is_limited (2 subjects)": ["MGET"],
        "RateLimitService.reset (2 subjects)": ["DEL"],
        "PairingHistoryService.record": ["XADD"],
        "PairingHistoryService.recent": ["XREVRANGE"],
        "PairingHistoryService.recent (filtered)": ["XREVRANGE"],
    }
)


async def measure(
    mon: CommandMonitor, s: Services, setup: Setup, call: Call
) -> tuple[Any, list[MonitoredCommand]]:
    await s.client.flushdb()
    await setup(s)
    return await mon.commands(s.client, lambda: call(s))


def names(commands: list[MonitoredCommand]) -> list[str]:
    return [c.name for c in commands]


@pytest.mark.parametrize(("label", "setup", "call"), CASES, ids=[c[0] for c in CASES])
async def test_one_round_trip(
    services: Services,
    monitor: CommandMonitor,
    label: str,
    setup: Setup,
    call: Call,
) -> None:
    _, commands = await measure(monitor, services, setup, call)
    assert names(commands) == EXPECTED[label], commands
    # one connection, the client's own (no new connection, no handshake on the way)
    assert len({c.source for c in commands}) == 1


async def test_the_measured_calls_did_their_work(
    services: Services, monitor: CommandMonitor
) -> None:
    """Guard against counting a call that silently did nothing."""
    s = services
    result, _ = await measure(
        monitor, s, _paired, lambda s: s.sessions.remove_all_sessions_for_runner("r1")
    )
    assert result == ["a1", "a2"]
    result, _ = await measure(monitor, s, _stale_runner, lambda s: s.runners.sweep())
    assert [(r.runner_id, r.unpaired_apps) for r in result] == [("r1", ["a1", "a2"])]
    result, _ = await measure(monitor, s, _paired, lambda s: s.codes.redeem("code-1", "a9"))
    assert result.runner_id == "r1"
    result, _ = await measure(monitor, s, _paired, lambda s: s.runners.release("r1", "c1"))
    assert result == ["a1", "a2"]
    result, _ = await measure(monitor, s, _paired, _output)
    assert result.seqs == [1, 1]
    result, _ = await measure(monitor, s, _paired, lambda s: _output(s, ("a1",)))
    assert result.seqs is None and result.members == ["a1", "a2"]
    result, _ = await measure(
        monitor, s, _paired, lambda s: s.relay.input("a1", "r1", "c", b"\x97", b"blob")
    )
    assert result.seq == 1
    result, _ = await measure(monitor, s, _held, lambda s: s.relay.held("a1", OUT, 2))
    assert (result.last_seq, result.first_seq, len(result.messages)) == (5, 1, 3)

    for label, setup, call in CASES:
        if not label.startswith("AppPairingService.pair"):
            continue
        result, _ = await measure(monitor, s, setup, call)
        expected = {
            "AppPairingService.pair (paired, moved from another runner)": ("ok", "r1", "r2"),
            "AppPairingService.pair (unknown code)": ("invalid", None, None),
            "AppPairingService.pair (runner offline)": ("offline", "r5", None),
            "AppPairingService.pair (rate limited)": ("limited", None, None),
        }[label]
        assert (result.status.value, result.runner_id, result.previous_runner_id) == expected
    history = [e.event for e in await s.history.recent(10)]  # the rate-limited one: nothing
    assert history == ["paired"]
    result, _ = await measure(monitor, s, _paired, lambda s: s.pairing.unpair("a1"))
    assert result == "r1"
    assert [(e.event, e.reason) for e in await s.history.recent(1)] == [("unpaired", "APP_UNPAIR")]

    result, _ = await measure(
        monitor,
        s,
        _bound,
        lambda s: s.registration.register("r1", "c2", address="a", runner_key=RUNNER_KEY),
    )
    assert result.status.value == "ok" and result.previous_owner == "c1"
    result, _ = await measure(
        monitor,
        s,
        _bound,
        lambda s: s.registration.register("r1", "c2", address="a", runner_key="x" * 22),
    )
    assert result.status.value == "unauthorized"
    assert await s.runners.owner("r1") == "c1"
    released, _ = await measure(monitor, s, _bound, lambda s: s.registration.release_key("r1"))
    assert released is True


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_relayed_message_is_one_round_trip(
    replicas: int, start_gateway: Callable[..., Any], monitor: CommandMonitor
) -> None:
    """runner:output and app:command with the hold on: one EVALSHA each (on one replica,
    delivered here; on two, published by the script), once the replica knows the pairing."""
    quiet = {"sweep_interval_s": 60}  # no sweeper commands in the window
    gw_a = await start_gateway(quiet)
    gw_b = gw_a if replicas == 1 else await start_gateway(quiet)
    runner, app = Client(reconnection=False), Client(reconnection=False)
    try:
        await runner.connect(gw_a.url)
        await app.connect(gw_b.url, auth={"appSessionId": "round-trip-app-0123456789"})
        await pair(app, runner, "r-rt")
        store = gw_a.app[STORE]
        for call in (
            lambda: runner.call("runner:output", {"data": "x"}),
            lambda: app.call("app:command", {"data": "y"}),
        ):
            await call()  # the first learns where the peer is
            _, commands = await monitor.commands(store, call)
            assert [c.name for c in commands if c.name != "PING"] == ["EVALSHA"], commands
        assert await app.next("terminal:output") == {"runnerId": "r-rt", "data": "x"}
        # A second app pairs: the runner's replica hears of it, the next output is still one.
        other = Client(reconnection=False)
        try:
            await other.connect(gw_b.url, auth={"appSessionId": "round-trip-two-0123456789"})
            await pair(other, runner, "r-rt")
            _, commands = await monitor.commands(
                store, lambda: runner.call("runner:output", {"data": "z"})
            )
            assert [c.name for c in commands if c.name != "PING"] == ["EVALSHA"], commands
            assert await other.next("terminal:output") == {"runnerId": "r-rt", "data": "z"}
        finally:
            await other.close()
    finally:
        await runner.close()
        await app.close()


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_resize_is_one_round_trip(
    replicas: int, start_gateway: Callable[..., Any], monitor: CommandMonitor
) -> None:
    """app:resize: the pairing-status script, plus a PUBLISH when the runner is elsewhere."""
    quiet = {"sweep_interval_s": 60}
    gw_a = await start_gateway(quiet)
    gw_b = gw_a if replicas == 1 else await start_gateway(quiet)
    runner, app = Client(reconnection=False), Client(reconnection=False)
    try:
        await runner.connect(gw_a.url)
        await app.connect(gw_b.url, auth={"appSessionId": "round-trip-size-0123456789"})
        await pair(app, runner, "r-rt-size")
        size = {"cols": 90, "rows": 30}
        _, commands = await monitor.commands(gw_a.app[STORE], lambda: app.call("app:resize", size))
        expected = ["EVALSHA"] if replicas == 1 else ["EVALSHA", "PUBLISH"]
        assert [c.name for c in commands if c.name != "PING"] == expected, commands
        got = await runner.next("terminal:resize")
        assert got == {"appSessionId": "round-trip-size-0123456789", **size}
    finally:
        await runner.close()
        await app.close()


async def test_runner_register_is_one_round_trip(
    start_gateway: Callable[..., Any], monitor: CommandMonitor
) -> None:
    """runner:register through a gateway: one EVALSHA on the command connection, whether it
    registers, renews with its key, is refused a bound id, or is rate limited; a takeover
    adds the PUBLISH that evicts the older socket (here on the other replica, whose
    disconnect handling is that replica's own commands)."""
    config = {"sweep_interval_s": 60, "rate_limit": {"registrations": 4}}
    gw_a, gw_b = await start_gateway(config), await start_gateway(config)
    first, again, thief = (Client(reconnection=False) for _ in range(3))
    key = {"runnerId": "r-reg", "runnerKey": RUNNER_KEY}
    try:
        await first.connect(gw_b.url)
        await again.connect(gw_a.url)
        await thief.connect(gw_a.url)
        steps = [
            (first, gw_b, key, True, ["EVALSHA"]),  # binds
            (first, gw_b, key, True, ["EVALSHA"]),  # same socket, renews
            (thief, gw_a, {"runnerId": "r-reg"}, False, ["EVALSHA"]),  # refused: no key
            (again, gw_a, key, True, ["EVALSHA", "PUBLISH"]),  # takes over, evicts ``first``
            (again, gw_a, key, False, ["EVALSHA"]),  # the 5th attempt: RATE_LIMITED
        ]
        for client, gw, payload, ok, expected in steps:
            ack, commands = await monitor.commands(
                gw.app[STORE], lambda c=client, p=payload: c.call("runner:register", p)
            )
            assert ("success" in ack) is ok, ack
            # this replica's command connection only: joining the room subscribes on the
            # pub/sub connection, and the evicted socket's replica has its own connections
            # (the first EVALSHA's: the pub/sub connection may still be starting up and send
            # its own commands first)
            own = next(c.source for c in commands if c.name == "EVALSHA")
            sent = [c.name for c in commands if c.source == own and c.name != "PING"]
            assert sent == expected, "; ".join(f"{c.source} {c.args[:4]}" for c in commands)
        assert ack["error"] == "RATE_LIMITED"
    finally:
        for client in (first, again, thief):
            await client.close()


async def test_noscript_is_recovered_by_reloading(
    services: Services, monitor: CommandMonitor, redis: Redis
) -> None:
    s = services
    await s.sessions.create_session("a1", "r1")
    await s.sessions.update_heartbeat("r1")
    await redis.script_flush()
    assert await redis.script_exists(s.sessions.backend._status.sha) == [False]

    status, commands = await monitor.commands(redis, lambda: s.sessions.get_session_status("a1"))
    assert status.session is not None and status.runner_online
    assert names(commands) == ["EVALSHA", "SCRIPT", "EVALSHA"]
    assert commands[1].args[1].upper() == "LOAD"

    # reloaded: back to one round trip
    _, commands = await monitor.commands(redis, lambda: s.sessions.get_session_status("a1"))
    assert names(commands) == ["EVALSHA"]

    # every other script works after the flush too
    await redis.script_flush()
    assert await s.sessions.remove_all_sessions_for_runner("r1") == ["a1"]
    assert (await s.codes.register("r1", "ABCD")).code == "ABCD"
    assert (await s.codes.redeem("abcd", "a2")).runner_id == "r1"
    assert await s.limits.hit("ratelimit:k") == [1]
    assert await s.runners.claim("r1", "c1") is None


async def test_without_load_scripts_the_first_call_loads(
    redis: Redis, monitor: CommandMonitor, redis_proc: RedisProcess
) -> None:
    await redis.script_flush()
    fresh = connect(redis_proc.url)
    try:
        await fresh.ping()  # open the connection before counting
        svc = PairingSessionService(fresh)
        _, first = await monitor.commands(fresh, lambda: svc.is_runner_online("r1"))
        _, second = await monitor.commands(fresh, lambda: svc.is_runner_online("r1"))
        _, loading = await monitor.commands(fresh, svc.load_scripts)
    finally:
        await fresh.aclose()
    assert names(first) == ["EVALSHA", "SCRIPT", "EVALSHA"]
    assert names(second) == ["EVALSHA"]
    assert names(loading) == ["SCRIPT"] * 6


def table(rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| Method | Commands sent per call | Round trips |", "|---|---|---|"]
    for label, cmds in rows:
        lines.append(f"| `{label}` | {', '.join(cmds)} | {len(cmds)} |")
    return "\n".join(lines)


async def test_docs_table_matches_measurements(services: Services, monitor: CommandMonitor) -> None:
    rows = []
    for label, setup, call in CASES:
        _, commands = await measure(monitor, services, setup, call)
        rows.append((label, names(commands)))
    print("\n" + table(rows))
    # the single-node table; the cluster's is checked by
    # tests/pairing/cluster/test_cluster_services.py
    doc = DOC.read_text().split("\n## On a Redis Cluster")[0]
    for line in table(rows).splitlines()[2:]:
        assert line in doc, f"docs/round-trips.md lacks the measured row {line!r}"
    documented = re.findall(r"^\| `([^`]+)` \|", doc, flags=re.M)
    assert sorted(documented) == sorted(label for label, _, _ in CASES)


async def test_filtered_history_reads_one_page_per_round_trip(
    services: Services, monitor: CommandMonitor
) -> None:
    s = services
    async with s.client.pipeline(transaction=False) as pipe:
        for i in range(1200):
            pipe.xadd("pairing:history", {"event": "paired", "runnerId": f"r{i % 100}"})
        await pipe.execute()
    found, commands = await monitor.commands(
        s.client, lambda: s.history.recent(100, runner_id="r7")
    )
    assert len(found) == 12
    assert names(commands) == ["XREVRANGE"] * 3  # pages of 500: 500 + 500 + 200
    _, commands = await monitor.commands(s.client, lambda: s.history.recent(100))
    assert names(commands) == ["XREVRANGE"]


async def test_pair_and_unpair_are_one_round_trip_each(
    start_gateway: Callable[..., Any], monitor: CommandMonitor
) -> None:
    """app:pair (paired or failed) and app:unpair through a gateway: one EVALSHA each, their
    history included (runner and app on one replica: the emits are local)."""
    gw = await start_gateway({"sweep_interval_s": 60})
    runner, app = Client(reconnection=False), Client(reconnection=False)
    try:
        await runner.connect(gw.url)
        await app.connect(gw.url, auth={"appSessionId": "round-trip-app-0123456789"})
        code = (await runner.call("runner:register", {"runnerId": "r-rt"}))["pairingCode"]
        await app.call("app:status", {})  # the app's first event (eviction publish) done
        store = gw.app[STORE]
        for call, ack in (
            (lambda: app.call("app:pair", {"pairingCode": "WRONG-CODE"}), "INVALID_CODE"),
            (lambda: app.call("app:pair", {"pairingCode": code}), True),
            (lambda: app.call("app:unpair", {}), True),
        ):
            reply, commands = await monitor.commands(store, call)
            assert reply.get("success", reply.get("error")) == ack, reply
            assert [c.name for c in commands if c.name != "PING"] == ["EVALSHA"], commands
        assert await runner.next("pairing:paired") == {"appSessionId": "round-trip-app-0123456789"}
        events = [(e["event"], e.get("reason")) for e in await _history(store)]
        assert events == [
            ("pair_failed", "INVALID_CODE"),
            ("paired", None),
            ("unpaired", "APP_UNPAIR"),
        ]
    finally:
        await runner.close()
        await app.close()


async def _history(store: Redis) -> list[dict[str, str]]:
    raw = await store.xrange("pairing:history")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in raw]
