"""Registration, runners, codes, limits, history and relay on one Redis and on a real cluster.

Every test runs twice: against one redis-server with the single-node layout, and against the
session's 3-master Redis Cluster with the cluster layout, asserting the same outcomes. Only a
real cluster refuses a script whose keys span slots (CROSSSLOT), an undeclared key or a shard
channel outside the script's slot; fakeredis checks none of these.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from pairing import keys
from pairing.relay import IN, OUT, Held, InputStatus, Recipient, RelayService
from pairing.store import Redis, connect
from pairing.store.cluster import cluster_client
from tests.redis_cluster_proc import RedisClusterProcess
from tests.redis_proc import RedisProcess


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
    assert (await relay.input(APP_A, None, None, b"", b"x")).status is InputStatus.RUNNER_OFFLINE
    assert await relay.held(APP_A, IN, 0) == Held(0, 1, [])
    await beat(env, "r1")
    unknown = await relay.input(APP_A, None, None, b"", b"x")
    assert unknown == type(unknown)(InputStatus.OTHER_RUNNER, "r1")
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
