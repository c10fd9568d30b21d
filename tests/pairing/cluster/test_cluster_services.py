"""Registration, runners, codes, limits, history and relay on one Redis and on a real cluster.

Every test runs twice: against one redis-server with the single-node layout, and against the
session's 3-master Redis Cluster with the cluster layout, asserting the same outcomes. Only a
real cluster refuses a script whose keys span slots (CROSSSLOT), an undeclared key or a shard
channel outside the script's slot; fakeredis checks none of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from pairing import (
    CodeTakenError,
    PairingCodeService,
    PairingHistoryService,
    RateLimitService,
    RefusalReason,
    RegistrationStatus,
    RunnerRegistration,
    RunnerRegistry,
    keys,
)
from pairing.history import HistoryEvent, NewEntry
from pairing.registration import key_digest
from pairing.relay import IN, OUT, Held, InputStatus, Recipient, RelayService
from pairing.store import Redis, connect
from pairing.store.cluster import cluster_client
from tests.support.paths import ROOT
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess


@dataclass
class Env:
    """A client and the layout that goes with it."""

    client: Redis
    layout: keys.KeyLayout
    #: The plain nodes the keys live on: the one server, or the cluster's masters.
    ports: list[int]

    @property
    def cluster(self) -> bool:
        return self.layout.cluster

    async def node_for(self, name: str) -> aioredis.Redis:
        """A plain client on the node that owns ``name`` (a key or a shard channel)."""
        if not self.cluster:
            return aioredis.Redis(port=self.ports[0])
        node = cast(aioredis.RedisCluster, self.client).get_node_from_key(name)
        return aioredis.Redis(host=node.host, port=node.port)

    async def sizes(self) -> list[int]:
        """Keys per master."""
        out = []
        for port in self.ports:
            async with aioredis.Redis(port=port) as c:
                out.append(int(await c.dbsize()))
        return out


@pytest.fixture(params=["single", "cluster"])
async def env(request: pytest.FixtureRequest, redis_proc: RedisProcess) -> AsyncIterator[Env]:
    if request.param == "single":
        client = connect(redis_proc.url)
        await client.flushdb()
        yield Env(client, keys.SINGLE_NODE, [redis_proc.port])
        await client.flushdb()
        await client.aclose()
        return
    proc: RedisClusterProcess = request.getfixturevalue("redis_cluster")
    rc = cluster_client(proc.url)
    await rc.initialize()
    await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    ports = sorted(n.port for n in rc.get_primaries())
    yield Env(cast(Redis, rc), keys.CLUSTER, ports)
    await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    await rc.aclose()


APP_A, APP_B = "cluster-app-a-0123456789", "cluster-app-b-0123456789"


async def pair(env: Env, app: str, runner: str, *, online: bool = True) -> None:
    """A pairing as the pairing core leaves it: session, the runner's app set, heartbeat."""
    session = {"appSessionId": app, "runnerId": runner, "pairedAt": 1, "isActive": True}
    await env.client.set(env.layout.session(app), json.dumps(session))
    await env.client.sadd(env.layout.runner_apps(runner), app)
    if online:
        await beat(env, runner)


async def beat(env: Env, runner: str) -> None:
    """A fresh heartbeat, by the clock of the node holding it."""
    name = env.layout.heartbeat(runner)
    node = await env.node_for(name)
    async with node:
        seconds, micros = await node.time()
    await env.client.set(name, seconds * 1000 + micros // 1000, px=60_000)


def ident(i: int) -> str:
    """Ids as the clients make them (random-looking), so their slots spread."""
    return hashlib.sha256(str(i).encode()).hexdigest()[:24]


def published(prefix: bytes, blob: bytes, seq: int) -> bytes:
    return prefix + blob + b"\xa0" + msgspec.msgpack.encode(seq)


class Listener:
    """A subscriber on one room channel (sharded in the cluster), as a replica holds it."""

    def __init__(self, env: Env, channel: str) -> None:
        self.env, self.channel = env, channel
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()

    async def __aenter__(self) -> Listener:
        self.node = await self.env.node_for(self.channel)
        self.pubsub = self.node.pubsub()
        if self.env.cluster:
            await self.pubsub.ssubscribe(self.channel)
        else:
            await self.pubsub.subscribe(self.channel)
        await self.pubsub.get_message(timeout=2)  # the subscription's confirmation
        return self

    async def next(self) -> bytes:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None:
                return cast(bytes, message["data"])

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()
        await self.node.aclose()


def relay_for(env: Env, **options: Any) -> RelayService:
    return RelayService(env.client, layout=env.layout, **options)


# -- relay ------------------------------------------------------------------------------------


async def test_output_holds_and_publishes_to_each_paired_app(env: Env) -> None:
    relay = relay_for(env)
    await relay.load_scripts()
    await pair(env, APP_A, "r1")
    await pair(env, APP_B, "r1")
    channel = env.layout.room_channel(f"app:{APP_B}")
    async with Listener(env, channel) as listener:
        recipients = [Recipient(APP_A, None, b""), Recipient(APP_B, channel, b"\x97")]
        first = await relay.output("r1", None, recipients, b"one")
        second = await relay.output("r1", None, recipients, b"two")
        assert first.seqs == [1, 1] and second.seqs == [2, 2]
        assert await listener.next() == published(b"\x97", b"one", 1)
        assert await listener.next() == published(b"\x97", b"two", 2)
    for app in (APP_A, APP_B):
        assert await relay.held(app, OUT, 0) == Held(2, 1, [b"one", b"two"])
        assert await relay.held(app, OUT, 1) == Held(2, 1, [b"two"])
    # A target: that app only.
    only = await relay.output("r1", APP_A, [Recipient(APP_A, None, b"")], b"three")
    assert only.seqs == [3]
    assert (await relay.held(APP_B, OUT, 0) or Held(0, 0, [])).last_seq == 2


async def test_output_to_out_of_date_recipients_relays_nothing(env: Env) -> None:
    relay = relay_for(env)
    await pair(env, APP_A, "r1")
    await pair(env, APP_B, "r1")
    stale = await relay.output("r1", None, [Recipient(APP_A, None, b"")], b"x")
    assert stale.seqs is None and stale.members == sorted([APP_A, APP_B])
    not_paired = await relay.output("r1", "nobody-0123456789", [], b"x")
    assert not_paired.seqs == [] or not_paired.seqs is None
    gone = await relay.output("r2", APP_A, [Recipient(APP_A, None, b"")], b"x")
    assert gone.seqs is None and gone.members == []
    for app in (APP_A, APP_B):
        assert await relay.held(app, OUT, 0) == Held(0, 1, [])


async def test_cluster_output_skips_an_app_whose_session_moved(env: Env) -> None:
    """The app set (runner slot) and the session (app slot) are two steps apart on a
    cluster: an app still in the set whose session points elsewhere gets nothing."""
    if not env.cluster:
        pytest.skip("one Redis changes both in one script")
    relay = relay_for(env)
    await pair(env, APP_A, "r1")
    await pair(env, APP_B, "r2")
    await env.client.sadd(env.layout.runner_apps("r1"), APP_B)  # left behind
    recipients = [Recipient(APP_A, None, b""), Recipient(APP_B, None, b"")]
    result = await relay.output("r1", None, recipients, b"x")
    assert result.seqs == [1, 0]
    assert await relay.held(APP_B, OUT, 0) == Held(0, 1, [])


async def test_input_checks_pairing_and_heartbeat_then_holds_and_publishes(env: Env) -> None:
    relay = relay_for(env)
    await relay.load_scripts()
    assert (await relay.input(APP_A, "r1", None, b"", b"x")).status is InputStatus.NOT_PAIRED
    assert (await relay.input(APP_A, None, None, b"", b"x")).status is InputStatus.NOT_PAIRED
    await pair(env, APP_A, "r1", online=False)
    offline = await relay.input(APP_A, "r1", None, b"", b"x")
    assert offline.status is InputStatus.RUNNER_OFFLINE
    # Not knowing the runner: told which it is, and asks again naming it.
    unknown = await relay.input(APP_A, None, None, b"", b"x")
    assert (unknown.status, unknown.runner_id) == (InputStatus.OTHER_RUNNER, "r1")
    assert await relay.held(APP_A, IN, 0) == Held(0, 1, [])
    await beat(env, "r1")
    assert await relay.input(APP_A, None, None, b"", b"x") == unknown
    other = await relay.input(APP_A, "r9", None, b"", b"x")
    assert other.status is InputStatus.OTHER_RUNNER and other.runner_id == "r1"
    channel = env.layout.room_channel("runner:r1")
    async with Listener(env, channel) as listener:
        sent = await relay.input(APP_A, "r1", channel, b"\x97", b"in-1")
        assert (sent.status, sent.runner_id, sent.seq) == (InputStatus.RELAYED, "r1", 1)
        assert await listener.next() == published(b"\x97", b"in-1", 1)
    here = await relay.input(APP_A, "r1", None, b"", b"in-2")
    assert here.seq == 2
    assert await relay.held(APP_A, IN, 0, paired_with="r1") == Held(2, 1, [b"in-1", b"in-2"])
    assert await relay.held(APP_A, IN, 0, paired_with="r2") is None


async def test_relay_keys_and_room_channels_sit_with_their_subject(env: Env) -> None:
    if not env.cluster:
        pytest.skip("cluster layout only")
    relay = relay_for(env)
    apps = [ident(i) for i in range(24)]
    for app in apps:
        await pair(env, app, f"r-{app}")
        result = await relay.output(f"r-{app}", app, [Recipient(app, None, b"")], b"x")
        assert result.seqs == [1]
        slot = key_slot(app.encode())
        assert key_slot(env.layout.room_channel(f"app:{app}").encode()) == slot
        assert key_slot(env.layout.resume_hold(app, OUT).encode()) == slot
    sizes = await env.sizes()
    assert all(size > 0 for size in sizes), sizes


# -- rate limits ------------------------------------------------------------------------------


async def test_limits_count_each_subject_on_its_own(env: Env) -> None:
    limits = RateLimitService(env.client, limit=2, window_s=60, layout=env.layout)
    await limits.load_scripts()
    addr, app = limits.key("pair:addr", "10.0.0.1"), limits.key("pair:app", APP_A)
    assert env.cluster == (addr == "ratelimit:pair:addr:{10.0.0.1}")
    assert await limits.hit(addr, app) == [1, 1]
    assert await limits.hit(addr) == [2]
    assert await limits.is_limited(addr, app) and not await limits.is_limited(app)
    assert 0 < await env.client.pttl(addr) <= 60_000
    await limits.reset(addr, app)
    assert not await limits.is_limited(addr, app)
    assert await limits.hit(app, addr) == [1, 1]


# -- history ----------------------------------------------------------------------------------


async def test_history_reads_every_shard_back_newest_first(env: Env) -> None:
    history = PairingHistoryService(env.client, layout=env.layout)
    await history.load_scripts()
    apps, runners = [ident(i) for i in range(24)], [f"r-{ident(i)}" for i in range(12)]
    written = []
    for i, app in enumerate(apps):
        runner = runners[i % len(runners)]
        await history.record(HistoryEvent.PAIRED, app_session_id=app, runner_id=runner)
        written.append((app, runner))
    await history.record_many(
        [NewEntry(HistoryEvent.UNPAIRED, app_session_id=a, runner_id=runners[0]) for a in apps[:3]]
        + [NewEntry(HistoryEvent.RUNNER_OFFLINE, runner_id=runners[0])]
    )
    everything = await history.recent(100)
    assert len(everything) == len(apps) + 4
    ats = [e.at for e in everything]
    assert ats == sorted(ats, reverse=True)
    assert {(e.app_session_id, e.runner_id) for e in everything if e.event == "paired"} == set(
        written
    )
    # A shorter read is the newest part of the whole trail.
    assert [e.id for e in await history.recent(5)] == [e.id for e in everything[:5]]
    # The entries of one subject keep their order exactly (one shard, one stream).
    of_app = await history.recent(10, app_session_id=apps[0])
    assert [e.event for e in of_app] == ["unpaired", "paired"]
    of_runner = await history.recent(100, runner_id=runners[0])
    assert [e.event for e in of_runner] == ["runner_offline"] + ["unpaired"] * 3 + ["paired"] * 2
    assert len(await history.recent(3, runner_id=runners[0])) == 3
    if env.cluster:  # the trail is spread over every master
        assert len({history.stream_for(runner_id=r) for r in runners}) > 3
        assert all(size > 0 for size in await env.sizes())


# -- codes ------------------------------------------------------------------------------------


async def test_codes_are_issued_replaced_and_revoked(env: Env) -> None:
    codes = PairingCodeService(env.client, layout=env.layout)
    await codes.load_scripts()
    layout = env.layout
    first = await codes.register("r1", "code-1")
    assert first.code == "CODE-1" and first.expires_at > 0
    assert await codes.current_code("r1") == "CODE-1"
    assert await env.client.get(layout.code("CODE-1")) == b"r1"
    assert 0 < await env.client.pttl(layout.code("CODE-1")) <= 300_000
    with pytest.raises(CodeTakenError):
        await codes.register("r2", "CODE-1")
    assert await codes.current_code("r2") is None
    again = await codes.register("r1", "CODE-1")  # its own code: refreshed
    assert again.code == "CODE-1"
    generated = await codes.register("r1")
    assert len(generated.code) == 10 and await codes.current_code("r1") == generated.code
    assert await env.client.get(layout.code("CODE-1")) is None  # replaced, so gone
    assert await env.client.get(layout.code(generated.code)) == b"r1"
    assert (await codes.register("r2", "CODE-1")).code == "CODE-1"  # free again
    assert await codes.revoke("r1")
    assert await codes.current_code("r1") is None
    assert await env.client.get(layout.code(generated.code)) is None
    assert not await codes.revoke("r1")
    assert await env.client.get(layout.code("CODE-1")) == b"r2"


# -- runners ----------------------------------------------------------------------------------


async def index_score(env: Env, runner: str) -> float | None:
    return await env.client.zscore(env.layout.last_seen(runner), runner)


async def test_claim_and_owned_heartbeats(env: Env) -> None:
    runners = RunnerRegistry(env.client, layout=env.layout)
    await runners.load_scripts()
    assert await runners.claim("r1", "c1") is None
    assert await runners.owner("r1") == "c1"
    first = await env.client.get(env.layout.heartbeat("r1"))
    score = await index_score(env, "r1")
    assert first is not None and score is not None
    # One script on one Redis; on a cluster the index entry is written first, on its shard.
    assert score == int(first) if not env.cluster else score <= int(first)
    assert await runners.claim("r1", "c2") == "c1"
    assert not await runners.heartbeat("r1", "c1")  # taken over
    assert await runners.heartbeat("r1", "c2")
    assert await runners.owner("r1") == "c2"
    # Owner lost (a sweep, or Redis lost it): the next beat claims again, index included.
    await env.client.delete(env.layout.owner("r1"))
    await env.client.zrem(env.layout.last_seen("r1"), "r1")
    assert await runners.heartbeat("r1", "c2")
    assert await runners.owner("r1") == "c2" and await index_score(env, "r1") is not None


async def test_cluster_heartbeats_write_the_index_only_when_it_is_due(env: Env) -> None:
    if not env.cluster:
        pytest.skip("one Redis writes the index with every beat, in the same script")
    runners = RunnerRegistry(env.client, layout=env.layout)
    await runners.claim("r1", "c1")
    shard = env.layout.last_seen("r1")
    await env.client.zadd(shard, {"r1": 5})
    assert await runners.heartbeat("r1", "c1")
    assert await index_score(env, "r1") == 5  # the mark is fresh: the shard was not written
    await env.client.delete(env.layout.last_seen_mark("r1"))
    assert await runners.heartbeat("r1", "c1")
    beat = await env.client.get(env.layout.heartbeat("r1"))
    assert beat is not None and await index_score(env, "r1") >= int(beat)
    ttl = await env.client.pttl(env.layout.last_seen_mark("r1"))
    assert 0 < ttl <= runners.heartbeat_timeout_ms // 2


async def test_runner_keys_and_index_shards_spread_over_the_masters(env: Env) -> None:
    if not env.cluster:
        pytest.skip("cluster layout only")
    runners = RunnerRegistry(env.client, layout=env.layout)
    ids = [ident(i) for i in range(40)]
    for runner in ids:
        await runners.claim(runner, "c")
    shards = {env.layout.last_seen(r) for r in ids}
    assert len(shards) > 8
    nodes = {cast(aioredis.RedisCluster, env.client).get_node_from_key(s).port for s in shards}
    assert len(nodes) == 3
    assert all(size > 0 for size in await env.sizes())
    for runner in ids:
        assert key_slot(env.layout.owner(runner).encode()) == key_slot(runner.encode())


# -- registration -----------------------------------------------------------------------------

KEY_A, KEY_B = "a" * 22, "B" * 43
ADDR = "203.0.113.7"


async def runner_state(env: Env, runner: str, code: str = "CODE-1") -> dict[str, Any]:
    layout = env.layout
    out: dict[str, Any] = {}
    for key in (
        layout.owner(runner),
        layout.heartbeat(runner),
        layout.runner_code(runner),
        layout.code(code),
        layout.runner_key(runner),
    ):
        out[key] = await env.client.get(key)
    out["index"] = await index_score(env, runner)
    return out


async def test_register_claims_binds_and_issues_a_code(env: Env) -> None:
    reg = RunnerRegistration(env.client, key_ttl_s=1000, layout=env.layout)
    await reg.load_scripts()
    layout = env.layout
    first = await reg.register("r1", "c1", address=ADDR, code="code-1", runner_key=KEY_A)
    assert first.status is RegistrationStatus.REGISTERED
    assert (first.code, first.previous_owner) == ("CODE-1", None)
    assert first.expires_at is not None and first.expires_at > 0
    state = await runner_state(env, "r1")
    assert state[layout.owner("r1")] == b"c1" and state[layout.code("CODE-1")] == b"r1"
    assert state[layout.runner_code("r1")] == b"CODE-1" and state["index"] is not None
    assert state[layout.runner_key("r1")] == key_digest(KEY_A).encode()
    assert await reg.is_bound("r1")
    # The key's holder takes over with a fresh code; the old code is gone.
    again = await reg.register("r1", "c2", address=ADDR, runner_key=KEY_A)
    assert again.status is RegistrationStatus.REGISTERED and again.previous_owner == "c1"
    assert again.code is not None and again.code != "CODE-1"
    assert await env.client.get(layout.code("CODE-1")) is None
    assert await env.client.get(layout.runner_code("r1")) == again.code.encode()
    # Someone else's code: taken, and nothing of r2 written.
    taken = await reg.register("r2", "c3", address=ADDR, code=again.code)
    assert taken.status is RegistrationStatus.CODE_TAKEN
    assert await reg.is_bound("r2") is False
    assert await env.client.get(layout.owner("r2")) is None
    assert await index_score(env, "r2") is None


@pytest.mark.parametrize(
    ("key", "token_ok", "reason"),
    [
        (None, True, RefusalReason.KEY_MISSING),
        (KEY_B, True, RefusalReason.KEY_MISMATCH),
        (KEY_A, False, RefusalReason.BAD_TOKEN),
    ],
)
async def test_a_refused_registration_changes_nothing_but_counts_and_records(
    env: Env, key: str | None, token_ok: bool, reason: RefusalReason
) -> None:
    reg = RunnerRegistration(env.client, key_ttl_s=1000, layout=env.layout)
    await reg.register("r1", "owner", address="198.51.100.1", code="CODE-1", runner_key=KEY_A)
    before = await runner_state(env, "r1")
    for code in ("CODE-1", "OTHER-2", None):
        result = await reg.register(
            "r1", "thief", address=ADDR, code=code, runner_key=key, token_ok=token_ok
        )
        assert (result.status, result.reason) == (RegistrationStatus.UNAUTHORIZED, reason)
    assert await runner_state(env, "r1") == before
    assert await env.client.get(env.layout.code("OTHER-2")) is None
    assert await env.client.get(reg.attempts_key(ADDR)) == b"3"
    history = PairingHistoryService(env.client, layout=env.layout)
    refused = await history.recent(10, runner_id="r1")
    assert [(e.event, e.reason, e.address) for e in refused] == [
        (HistoryEvent.REGISTER_REFUSED.value, reason.value, ADDR)
    ] * 3


async def test_registration_limit_and_key_release(env: Env) -> None:
    reg = RunnerRegistration(env.client, limit=2, layout=env.layout)
    await reg.load_scripts()
    for i in range(2):
        ok = await reg.register("r1", f"c{i}", address=ADDR, runner_key=KEY_A)
        assert ok.status is RegistrationStatus.REGISTERED
    limited = await reg.register("r1", "c9", address=ADDR, runner_key=KEY_A)
    assert limited.status is RegistrationStatus.RATE_LIMITED
    assert await env.client.get(env.layout.owner("r1")) == b"c1"
    assert await reg.release_key("r1") and not await reg.is_bound("r1")
    assert not await reg.release_key("r1")
    history = PairingHistoryService(env.client, layout=env.layout)
    assert [e.event for e in await history.recent(10, runner_id="r1")] == [
        HistoryEvent.RUNNER_KEY_RELEASED.value
    ]


async def test_registrations_land_on_every_master(env: Env) -> None:
    if not env.cluster:
        pytest.skip("cluster layout only")
    reg = RunnerRegistration(env.client, layout=env.layout)
    ids = [ident(i) for i in range(30)]
    results = await asyncio.gather(*(reg.register(r, "c", address=ADDR) for r in ids))
    assert {r.status for r in results} == {RegistrationStatus.REGISTERED}
    assert all(size > 0 for size in await env.sizes())
    for runner, result in zip(ids, results, strict=True):
        assert result.code is not None
        assert await env.client.get(env.layout.code(result.code)) == runner.encode()


# -- what each cluster operation sends ---------------------------------------------------------


class Counter:
    """Records what a client sends: command names in order, and how many sequential waves
    (a wave starts when a command is sent with none in flight; commands sent together with
    ``asyncio.gather`` are one wave, one round trip of latency)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self.sent: list[str] = []
        self.waves = 0
        self._in_flight = 0
        self._send = client.execute_command

    def __enter__(self) -> Counter:
        async def counted(*args: Any, **options: Any) -> Any:
            if self._in_flight == 0:
                self.waves += 1
            self._in_flight += 1
            self.sent.append(str(args[0]).upper())
            try:
                return await self._send(*args, **options)
            finally:
                self._in_flight -= 1

        self.client.execute_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.client.execute_command

    def row(self) -> str:
        groups: list[tuple[str, int]] = []
        for name in self.sent:
            if groups and groups[-1][0] == name:
                groups[-1] = (name, groups[-1][1] + 1)
            else:
                groups.append((name, 1))
        names = " + ".join(name if n == 1 else f"{n} {name}" for name, n in groups)
        return f"{names} | {self.waves} |"


DOC = ROOT / "docs" / "round-trips.md"


@dataclass
class Kit:
    env: Env
    relay: RelayService
    runners: RunnerRegistry
    registration: RunnerRegistration
    codes: PairingCodeService
    limits: RateLimitService
    history: PairingHistoryService


async def _kit_paired(k: Kit) -> None:
    """r1 online, owned by c1, bound to KEY_A, code CODE-1; apps a and b paired with it."""
    await k.registration.register("r1", "c1", address=ADDR, code="CODE-1", runner_key=KEY_A)
    await pair(k.env, APP_A, "r1")
    await pair(k.env, APP_B, "r1")


def _out(k: Kit, apps: tuple[str, ...] = (APP_A, APP_B), *, members_known: bool = False) -> Any:
    channel = k.env.layout.room_channel(f"app:{APP_B}")
    recipients = [Recipient(a, None if a == APP_A else channel, b"\x97") for a in apps]
    return k.relay.output("r1", None, recipients, b"blob", members_known=members_known)


async def _due(k: Kit) -> None:
    await _kit_paired(k)
    await k.env.client.delete(k.env.layout.last_seen_mark("r1"))


async def _limited(k: Kit) -> None:
    await _kit_paired(k)
    await k.env.client.set(k.registration.attempts_key(ADDR), 60)


CLUSTER_CASES: list[tuple[str, Any]] = [
    ("RelayService.output (2 apps, 1 published)", _out),
    (
        "RelayService.output (2 apps, 1 published, members known)",
        lambda k: _out(k, members_known=True),
    ),
    ("RelayService.output (apps out of date)", lambda k: _out(k, (APP_A,))),
    (
        "RelayService.input (published)",
        lambda k: k.relay.input(
            APP_A, "r1", k.env.layout.room_channel("runner:r1"), b"\x97", b"blob"
        ),
    ),
    (
        "RelayService.input (published, runner known fresh)",
        lambda k: k.relay.input(
            APP_A, "r1", k.env.layout.room_channel("runner:r1"), b"\x97", b"blob"
        ),
    ),
    ("RelayService.input (delivered here)", lambda k: k.relay.input(APP_A, "r1", None, b"", b"b")),
    ("RelayService.input (runner unknown)", lambda k: k.relay.input(APP_A, None, None, b"", b"b")),
    ("RelayService.held", lambda k: k.relay.held(APP_A, OUT, 0)),
    ("RunnerRegistry.claim", lambda k: k.runners.claim("r1", "c2")),
    ("RunnerRegistry.heartbeat", lambda k: k.runners.heartbeat("r1", "c1")),
    ("RunnerRegistry.heartbeat (index due)", lambda k: k.runners.heartbeat("r1", "c1")),
    ("RunnerRegistry.owner", lambda k: k.runners.owner("r1")),
    (
        "RunnerRegistration.register (proposed code, key)",
        lambda k: k.registration.register(
            "r1", "c2", address=ADDR, code="CODE-2", runner_key=KEY_A
        ),
    ),
    (
        "RunnerRegistration.register (its own code again)",
        lambda k: k.registration.register(
            "r1", "c2", address=ADDR, code="CODE-1", runner_key=KEY_A
        ),
    ),
    (
        "RunnerRegistration.register (refused: wrong key)",
        lambda k: k.registration.register("r1", "c2", address=ADDR, runner_key=KEY_B),
    ),
    (
        "RunnerRegistration.register (code taken)",
        lambda k: k.registration.register("r2", "c2", address=ADDR, code="CODE-1"),
    ),
    (
        "RunnerRegistration.register (rate limited)",
        lambda k: k.registration.register("r1", "c2", address=ADDR, runner_key=KEY_A),
    ),
    ("RunnerRegistration.release_key", lambda k: k.registration.release_key("r1")),
    ("PairingCodeService.register (proposed code)", lambda k: k.codes.register("r1", "CODE-2")),
    ("PairingCodeService.revoke", lambda k: k.codes.revoke("r1")),
    ("PairingCodeService.current_code", lambda k: k.codes.current_code("r1")),
    (
        "RateLimitService.is_limited (2 subjects)",
        lambda k: k.limits.is_limited(k.limits.key("x", "1"), k.limits.key("y", "1")),
    ),
    (
        "RateLimitService.hit (2 subjects)",
        lambda k: k.limits.hit(k.limits.key("x", "1"), k.limits.key("y", "1")),
    ),
    (
        "RateLimitService.reset (2 subjects)",
        lambda k: k.limits.reset(k.limits.key("x", "1"), k.limits.key("y", "1")),
    ),
    (
        "PairingHistoryService.record",
        lambda k: k.history.record("paired", app_session_id=APP_A, runner_id="r1"),
    ),
    (
        "PairingHistoryService.record_many (3 entries)",
        lambda k: k.history.record_many(
            [
                NewEntry(HistoryEvent.UNPAIRED, app_session_id=APP_A, runner_id="r1"),
                NewEntry(HistoryEvent.UNPAIRED, app_session_id=APP_B, runner_id="r1"),
                NewEntry(HistoryEvent.RUNNER_OFFLINE, runner_id="r1"),
            ]
        ),
    ),
    ("PairingHistoryService.recent", lambda k: k.history.recent(10)),
]


async def _known_fresh(k: Kit) -> None:
    """An earlier input found r1's heartbeat fresh: the next ones skip that step."""
    await _kit_paired(k)
    await k.relay.input(APP_A, "r1", None, b"", b"before")


SETUPS = {
    "RelayService.input (published, runner known fresh)": _known_fresh,
    "RunnerRegistry.heartbeat (index due)": _due,
    "RunnerRegistration.register (rate limited)": _limited,
}


async def test_cluster_round_trips_match_the_docs(redis_cluster: RedisClusterProcess) -> None:
    """On a real cluster: what each operation sends and in how many sequential round trips,
    as docs/round-trips.md's cluster table says (scripts loaded beforehand)."""
    rc = cluster_client(redis_cluster.url)
    await rc.initialize()
    client = cast(Redis, rc)
    env = Env(client, keys.CLUSTER, [])
    layout = env.layout
    kit = Kit(
        env,
        RelayService(client, layout=layout),
        RunnerRegistry(client, layout=layout),
        RunnerRegistration(client, layout=layout),
        PairingCodeService(client, layout=layout),
        RateLimitService(client, layout=layout),
        PairingHistoryService(client, layout=layout),
    )
    for svc in (kit.relay, kit.runners, kit.registration, kit.codes, kit.limits, kit.history):
        await svc.load_scripts()
    doc = await asyncio.to_thread(DOC.read_text)
    missing = []
    try:
        for label, call in CLUSTER_CASES:
            await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
            # each row is a first call unless its setup says otherwise
            kit.relay.backend._fresh_until.clear()  # type: ignore[attr-defined]
            await SETUPS.get(label, _kit_paired)(kit)
            with Counter(client) as counter:
                await call(kit)
            row = f"| `{label}` | {counter.row()}"
            if row not in doc:
                missing.append(row)
    finally:
        await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
        await rc.aclose()
    assert not missing, "docs/round-trips.md lacks the measured rows:\n" + "\n".join(missing)


# -- a crash between two steps ----------------------------------------------------------------


class Crash(Exception):
    """The replica died here: this command and every later one are never sent."""


class CrashAfter:
    """Lets the first ``sent`` commands through, then fails every one (a replica killed
    between two steps of an operation)."""

    def __init__(self, client: Redis, sent: int) -> None:
        self.client, self.left = client, sent
        self._send = client.execute_command

    def __enter__(self) -> CrashAfter:
        async def send(*args: Any, **options: Any) -> Any:
            if self.left <= 0:
                raise Crash(str(args[0]))
            self.left -= 1
            return await self._send(*args, **options)

        self.client.execute_command = send  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.client.execute_command


async def runner_view(k: Kit, runner: str = "r1") -> dict[str, Any]:
    """What clients and the sweeper go by: owner, heartbeat, the runner's code and whether
    its key names it, the index entry, the key binding, and which codes name the runner."""
    env, layout = k.env, k.env.layout
    code = await env.client.get(layout.runner_code(runner))
    codes = {c: await env.client.get(layout.code(c)) for c in ("CODE-1", "CODE-2")}
    return {
        "owner": await env.client.get(layout.owner(runner)),
        "beating": await env.client.exists(layout.heartbeat(runner)) == 1,
        "code": code,
        "code_names_runner": code is not None
        and await env.client.get(layout.code(code.decode())) == runner.encode(),
        "indexed": await index_score(env, runner) is not None,
        "binding": await env.client.get(layout.runner_key(runner)),
        "naming": sorted(c for c, v in codes.items() if v == runner.encode()),
    }


async def interrupted(k: Kit, setup: Any, call: Any) -> list[dict[str, Any]]:
    """The view after ``call`` is cut after each of its commands in turn (the last view:
    not cut)."""
    rc = k.env.client
    await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    await setup(k)
    with Counter(rc) as counter:
        await call(k)
    views = []
    for sent in range(len(counter.sent) + 1):
        await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
        await setup(k)
        with CrashAfter(rc, sent), contextlib.suppress(Crash):
            await call(k)
        views.append(await runner_view(k))
    return views


@pytest.fixture
async def cluster_kit(redis_cluster: RedisClusterProcess) -> AsyncIterator[Kit]:
    rc = cluster_client(redis_cluster.url)
    await rc.initialize()
    client = cast(Redis, rc)
    env = Env(client, keys.CLUSTER, sorted(n.port for n in rc.get_primaries()))
    layout = env.layout
    yield Kit(
        env,
        RelayService(client, layout=layout),
        RunnerRegistry(client, layout=layout),
        RunnerRegistration(client, layout=layout),
        PairingCodeService(client, layout=layout),
        RateLimitService(client, layout=layout),
        PairingHistoryService(client, layout=layout),
    )
    await rc.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    await rc.aclose()


async def test_a_takeover_cut_between_any_two_steps_leaves_one_consistent_runner(
    cluster_kit: Kit,
) -> None:
    """runner:register by the key's holder on a new connection with a new code, cut after
    each step: the runner always has an owner, a heartbeat, its index entry and a code that
    names it; before the runner-slot step it is the old connection's runner with its old
    code, after it the new one's. Only the replaced code may outlive its replacement (the
    documented window, until the last step)."""
    views = await interrupted(
        cluster_kit,
        _kit_paired,
        lambda k: k.registration.register(
            "r1", "c2", address=ADDR, code="CODE-2", runner_key=KEY_A
        ),
    )
    binding = key_digest(KEY_A).encode()
    for view in views:
        assert view["beating"] and view["indexed"] and view["code_names_runner"]
        assert view["binding"] == binding
        if view["owner"] == b"c1":
            assert view["code"] == b"CODE-1"
        else:
            assert (view["owner"], view["code"]) == (b"c2", b"CODE-2")
    owners = [v["owner"] for v in views]
    assert owners == sorted(owners) and owners[0] == b"c1" and owners[-1] == b"c2"
    assert views[-1]["naming"] == ["CODE-2"]  # the old code is gone once it completes
    assert all(
        v["naming"] in (["CODE-1"], ["CODE-1", "CODE-2"]) for v in views if v["owner"] == b"c1"
    )


async def test_a_refused_takeover_cut_anywhere_changes_nothing(cluster_kit: Kit) -> None:
    await _kit_paired(cluster_kit)
    before = await runner_view(cluster_kit)
    views = await interrupted(
        cluster_kit,
        _kit_paired,
        lambda k: k.registration.register(
            "r1", "thief", address=ADDR, code="CODE-2", runner_key=KEY_B
        ),
    )
    assert views == [before] * len(views)


async def test_code_issuing_and_revoking_cut_anywhere(cluster_kit: Kit) -> None:
    """The runner's code names the runner at every cut of ``register``; ``revoke`` cut
    anywhere never leaves a live code the runner no longer shows."""
    issued = await interrupted(cluster_kit, _kit_paired, lambda k: k.codes.register("r1", "CODE-2"))
    for view in issued:
        assert view["code_names_runner"] and view["code"] in (b"CODE-1", b"CODE-2")
    assert issued[-1]["naming"] == ["CODE-2"]
    revoked = await interrupted(cluster_kit, _kit_paired, lambda k: k.codes.revoke("r1"))
    for view in revoked:
        live = view["naming"]
        assert live == [] or (live == ["CODE-1"] and view["code"] == b"CODE-1")
    assert revoked[-1]["code"] is None and revoked[-1]["naming"] == []


async def test_claims_and_heartbeats_cut_anywhere_keep_the_runner_indexed(cluster_kit: Kit) -> None:
    async def nothing(k: Kit) -> None:
        return None

    async def due(k: Kit) -> None:
        await _kit_paired(k)
        await k.env.client.delete(k.env.layout.last_seen_mark("r1"))

    for setup, call in (
        (nothing, lambda k: k.runners.claim("r1", "c1")),
        (_kit_paired, lambda k: k.runners.claim("r1", "c2")),
        (nothing, lambda k: k.registration.register("r1", "c1", address=ADDR)),
    ):
        for view in await interrupted(cluster_kit, setup, call):
            # Whoever owns the runner, the sweeper can find it.
            assert view["owner"] is None or view["indexed"]
    for view in await interrupted(cluster_kit, due, lambda k: k.runners.heartbeat("r1", "c1")):
        assert view["owner"] == b"c1" and view["indexed"] and view["beating"]


async def test_a_fresh_heartbeat_is_not_asked_again_until_it_could_be_stale(env: Env) -> None:
    """Cluster input remembers how long the runner's heartbeat stays fresh (from before it
    asked) and skips that step meanwhile; past it, it asks again and sees the runner offline."""
    if not env.cluster:
        pytest.skip("one Redis checks the heartbeat inside the input script")
    now = [1000.0]
    relay = RelayService(
        env.client, layout=env.layout, heartbeat_timeout_s=30, clock=lambda: now[0]
    )
    await pair(env, APP_A, "r1")
    with Counter(env.client) as first:
        assert (await relay.input(APP_A, "r1", None, b"", b"1")).status is InputStatus.RELAYED
    with Counter(env.client) as second:
        assert (await relay.input(APP_A, "r1", None, b"", b"2")).status is InputStatus.RELAYED
    assert (first.sent, second.sent) == (["EVALSHA", "EVALSHA"], ["EVALSHA"])
    # The heartbeat is made stale (as a runner that stopped beating 31 s ago) and the clock
    # passes the remembered deadline: asked again, the runner is offline.
    await env.client.set(env.layout.heartbeat("r1"), 1, px=60_000)
    now[0] += 29.0
    with Counter(env.client) as within:
        await relay.input(APP_A, "r1", None, b"", b"3")
    assert within.sent == ["EVALSHA"]  # (still within the deadline the first answer gave)
    now[0] += 1.1
    with Counter(env.client) as after:
        result = await relay.input(APP_A, "r1", None, b"", b"4")
    assert after.sent == ["EVALSHA", "EVALSHA"]
    assert result.status is InputStatus.RUNNER_OFFLINE
