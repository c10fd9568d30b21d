"""pairing.store.sharded: the fan-out's sharded pub/sub on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from pairing import keys
from pairing.store.cluster import cluster_client
from pairing.store.sharded import ShardedSubscriber
from tests.support.redis_cluster import RedisClusterProcess


async def _replies(sub: ShardedSubscriber, count: int, timeout: float = 5.0) -> list[list[Any]]:
    out: list[list[Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.extend(await sub.read())
    return out


def _channels(n: int) -> list[str]:
    return [keys.CLUSTER.room_channel(f"runner:r{i}") for i in range(n)]


async def test_messages_come_from_the_shard_owning_each_channel(
    cluster_redis: RedisCluster,
) -> None:
    sub = ShardedSubscriber(cluster_redis)
    channels = _channels(30)
    try:
        await sub.connect()
        sub.subscribe(*channels)
        confirmations = await _replies(sub, len(channels))
        assert sorted(r[1].decode() for r in confirmations) == sorted(channels)
        assert {r[0] for r in confirmations} == {b"subscribe"}
        # One connection per master that owns a channel: all three here.
        owners = {cluster_redis.get_node_from_key(c).name for c in channels}  # type: ignore[union-attr]
        assert len(owners) == 3 and set(sub._links) == owners
        for i, channel in enumerate(channels):
            # SPUBLISH reaches exactly one subscriber: ours, on the owning shard.
            assert await cluster_redis.execute_command("SPUBLISH", channel, f"m{i}") == 1
        messages = await _replies(sub, len(channels))
        assert [r[0] for r in messages] == [b"message"] * len(channels)
        assert sorted((r[1].decode(), r[2].decode()) for r in messages) == sorted(
            (c, f"m{i}") for i, c in enumerate(channels)
        )
        # A plain PUBLISH to the same name is not a sharded message and is not heard.
        await cluster_redis.publish(channels[0], "plain")
        sub.ping()
        assert await _replies(sub, 1) == [[b"pong", b""]]
    finally:
        await sub.aclose()


async def test_one_pong_per_ping_once_every_master_answered(cluster_redis: RedisCluster) -> None:
    sub = ShardedSubscriber(cluster_redis)
    try:
        await sub.connect()
        sub.ping()  # no connection yet: answered at once
        assert await _replies(sub, 1) == [[b"pong", b""]]
        sub.subscribe(*_channels(30))
        await _replies(sub, 30)
        for _ in range(3):
            sub.ping()
            assert await _replies(sub, 1) == [[b"pong", b""]]
        # A master that stops answering withholds this round's pong ...
        link = next(iter(sub._links.values()))
        link.task.cancel()  # type: ignore[union-attr]
        sub.ping()
        with pytest.raises(TimeoutError):
            await _replies(sub, 1, timeout=1.0)
        # ... and still owing it at the next round, it is dropped, and the pong comes from
        # the others; its channels are subscribed again on a new connection.
        sub.ping()
        replies = await _replies(sub, 1)
        assert [b"pong", b""] in replies
        assert sub._links.get(link.node.name) is not link
        async with asyncio.timeout(10):
            while sub.resubscribed == 0 or sub._orphans:
                replies += await sub.read()
    finally:
        await sub.aclose()


async def test_unsubscribed_channels_go_quiet(cluster_redis: RedisCluster) -> None:
    sub = ShardedSubscriber(cluster_redis)
    channels = _channels(2)
    try:
        await sub.connect()
        sub.subscribe(*channels)
        await _replies(sub, 2)
        sub.unsubscribe(channels[0])
        [reply] = await _replies(sub, 1)
        assert reply[:2] == [b"unsubscribe", channels[0].encode()]
        assert await cluster_redis.execute_command("SPUBLISH", channels[0], "x") == 0
        assert await cluster_redis.execute_command("SPUBLISH", channels[1], "y") == 1
        [message] = await _replies(sub, 1)
        assert message == [b"message", channels[1].encode(), b"y"]
    finally:
        await sub.aclose()


async def test_a_channel_whose_slot_moved_is_resubscribed_on_its_new_master(
    own_cluster: RedisClusterProcess,
) -> None:
    client = cluster_client(own_cluster.url)
    sub = ShardedSubscriber(client)
    try:
        await client.initialize()
        channel = keys.CLUSTER.room_channel("runner:moving")
        await sub.connect()
        sub.subscribe(channel)
        await _replies(sub, 1)
        slot = client.keyslot(channel)
        source = client.get_node_from_key(channel)
        assert source is not None
        target = next(n for n in client.get_primaries() if n.name != source.name)

        def node_id(port: int) -> str:
            with redis.Redis(port=port, decode_responses=True) as c:
                return str(c.execute_command("CLUSTER", "MYID"))

        source_id, target_id = node_id(source.port), node_id(target.port)
        with (
            redis.Redis(port=source.port) as src,
            redis.Redis(port=target.port) as dst,
        ):
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        # The source master's unasked sunsubscribe: the channel alone is subscribed again,
        # on the new owner (its confirmation comes out as any subscribe's), without an error.
        [confirmed] = await _replies(sub, 1)
        assert confirmed[:2] == [b"subscribe", channel.encode()]
        assert sub._channels[channel] == target.name
        assert await client.execute_command("SPUBLISH", channel, "after") == 1
        assert await _replies(sub, 1) == [[b"message", channel.encode(), b"after"]]
    finally:
        await sub.aclose()
        await client.aclose()


async def test_subscriptions_follow_a_failover(own_cluster: RedisClusterProcess) -> None:
    client = cluster_client(own_cluster.url)
    sub = ShardedSubscriber(client)
    channels = _channels(30)
    try:
        await client.initialize()
        await sub.connect()
        sub.subscribe(*channels)
        await _replies(sub, len(channels))
        killed = own_cluster.kill_master()
        name = f"127.0.0.1:{killed.port}"
        on_killed = [c for c in channels if sub._channels[c] == name]
        healthy = [c for c in channels if c not in on_killed]
        assert on_killed and healthy
        # The other masters' channels deliver while the killed one's wait for its replica
        # (no error surfaces from read: the failure is the killed master's alone).
        for i, channel in enumerate(healthy):
            assert await client.execute_command("SPUBLISH", channel, f"h{i}") == 1
        got = await _replies(sub, len(healthy))
        assert sorted(r[2].decode() for r in got if r[0] == b"message") == sorted(
            f"h{i}" for i in range(len(healthy))
        )
        await asyncio.to_thread(own_cluster.wait_promoted, killed)
        confirmed: set[bytes] = set()
        async with asyncio.timeout(30):
            while len(confirmed) < len(on_killed):  # the resubscriptions' confirmations
                confirmed |= {r[1] for r in await sub.read() if r[0] == b"subscribe"}
        assert confirmed == {c.encode() for c in on_killed}
        assert name not in sub._links
        assert len(sub._links) == 3
        for i, channel in enumerate(channels):
            assert await client.execute_command("SPUBLISH", channel, f"m{i}") == 1
        messages = await _replies(sub, len(channels))
        assert sorted(r[2].decode() for r in messages) == sorted(f"m{i}" for i in range(30))
    finally:
        await sub.aclose()
        await client.aclose()
