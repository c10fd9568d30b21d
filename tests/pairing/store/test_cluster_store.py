"""pairing.store.cluster and the cluster key layout, on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from unittest.mock import patch

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from pairing import keys
from pairing.scripts import Script
from pairing.store import ping
from pairing.store.cluster import cluster_client, is_cluster_url, parse_cluster_url
from tests.support.redis_cluster import RedisClusterProcess


def test_cluster_urls_name_startup_nodes_credentials_and_tls() -> None:
    spec = parse_cluster_url("redis+cluster://u%40x:p%3Aw@10.0.0.1:7000,[::1]:7001, h:7002/0")
    assert spec.nodes == (("10.0.0.1", 7000), ("::1", 7001), ("h", 7002))
    assert (spec.username, spec.password, spec.ssl) == ("u@x", "p:w", False)
    assert parse_cluster_url("rediss+cluster://h:1?ssl_cert_reqs=none").ssl is True
    assert parse_cluster_url("rediss+cluster://h:1?ssl_cert_reqs=none").options == {
        "ssl_cert_reqs": "none"
    }
    assert parse_cluster_url("redis+cluster://:secret@h:1").username is None
    assert is_cluster_url("rediss+cluster://h:1") and not is_cluster_url("redis://h:1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:1/3", "only database 0"),
        ("redis+cluster://h", "must be host:port"),
        ("redis+cluster://h:1,:2", "must be host:port"),
        ("redis://h:1", "not a cluster URL"),
    ],
)
def test_malformed_cluster_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


def test_single_node_layout_is_unchanged() -> None:
    layout = keys.layout_for("redis://127.0.0.1:6379/0")
    assert layout is keys.layout_for("redis+sentinel://h:1/m") is keys.layout_for("memory://")
    assert layout.session("a1") == "pairing:session:a1"
    assert layout.runner_apps("r1") == "pairing:apps:r1"
    assert layout.heartbeat("r1") == "runner:heartbeat:r1"
    assert layout.owner("r1") == "runner:owner:r1"
    assert layout.code("ab12") == "pairing:code:AB12"
    assert layout.runner_code("r1") == "pairing:runner_code:r1"
    assert layout.rate_limit("pair", "1.2.3.4") == "ratelimit:pair:1.2.3.4"
    assert layout.room_channel("runner:r1") == "gateway:room:runner:r1"
    assert layout.last_seen("r1") == "runner:last_seen"
    assert layout.last_seen_shards() == ("runner:last_seen",)
    assert layout.history("a1") == "pairing:history"
    assert layout.sweeper_lock() == "gateway:sweeper:lock"
    assert layout.publish_command == "PUBLISH"


def test_cluster_layout_tags_the_session_service_keys_and_every_per_subject_key() -> None:
    layout = keys.layout_for("redis+cluster://h:1")
    assert layout.cluster
    # PairingSessionService's three key families, their braces now hash tags.
    assert layout.session("a1") == "pairing:session:{a1}"
    assert layout.runner_apps("r1") == "pairing:apps:{r1}"
    assert layout.heartbeat("r1") == "runner:heartbeat:{r1}"
    # A runner's keys share its slot; an app's keys share the app's.
    runner_keys = [layout.runner_apps("r1"), layout.heartbeat("r1"), layout.owner("r1")]
    runner_keys.append(layout.runner_code("r1"))
    assert {key_slot(k.encode()) for k in runner_keys} == {key_slot(b"r1")}
    assert key_slot(layout.session("a1").encode()) == key_slot(b"a1")
    for direction in keys.DIRECTIONS:
        app_keys = [layout.resume_seq("a1", direction), layout.resume_hold("a1", direction)]
        app_keys.append(layout.resume_bytes("a1", direction))
        assert {key_slot(k.encode()) for k in app_keys} == {key_slot(b"a1")}
    assert layout.code("ab12") == "pairing:code:{AB12}"
    # A room's channel carries the room's id as its tag: the slot of that app's or runner's
    # keys, so a script on that slot may SPUBLISH to it.
    assert layout.room_channel("app:a1") == "gateway:room:app:{a1}"
    assert layout.room_channel("runner:r:1") == "gateway:room:runner:{r:1}"
    assert key_slot(layout.room_channel("app:a1").encode()) == key_slot(b"a1")
    assert key_slot(layout.room_channel("runner:r1").encode()) == key_slot(b"r1")
    assert layout.publish_command == "SPUBLISH"


def test_shared_keys_are_shards_spread_evenly_over_the_slots() -> None:
    layout = keys.CLUSTER
    for shards in (layout.last_seen_shards(), layout.history_shards()):
        assert len(shards) == keys.SHARDS == len(set(shards))
        slots = [key_slot(s.encode()) for s in shards]
        width = 16384 / keys.SHARDS
        assert [int(slot // width) for slot in slots] == list(range(keys.SHARDS))
    assert len({layout.sweeper_lock(k) for k in range(keys.SHARDS)}) == keys.SHARDS
    # Every runner's index entry is in one of the shards, chosen by its id.
    picked = {layout.last_seen(f"runner-{i}") for i in range(200)}
    assert picked == set(layout.last_seen_shards())


async def test_keys_of_many_runners_and_apps_sit_on_every_master(
    cluster_redis: redis.asyncio.RedisCluster, redis_cluster: RedisClusterProcess
) -> None:
    layout = keys.CLUSTER
    for i in range(60):
        runner, app = f"runner-{i}", f"app-{i}"
        await cluster_redis.set(layout.heartbeat(runner), "1")
        await cluster_redis.sadd(layout.runner_apps(runner), app)
        await cluster_redis.set(layout.session(app), runner)
        await cluster_redis.zadd(layout.last_seen(runner), {runner: i})
    sizes = []
    for master in redis_cluster.master_nodes():
        with redis_cluster.client(master) as c:
            sizes.append(int(c.dbsize()))
            shards = [
                s
                for s in layout.last_seen_shards()
                if c.execute_command("CLUSTER", "COUNTKEYSINSLOT", key_slot(s.encode()))
            ]
            # Each master holds some of the sweeper's index shards.
            assert shards, f"no index shard on master {master.port}"
    assert len(sizes) == 3 and all(size > 0 for size in sizes)
    used_shards = {layout.last_seen(f"runner-{i}") for i in range(60)}
    assert sum(sizes) == 60 * 3 + len(used_shards)


async def test_a_script_runs_on_the_master_of_its_keys_slot(
    cluster_redis: redis.asyncio.RedisCluster,
) -> None:
    layout = keys.CLUSTER
    script = Script(cluster_redis, "return redis.call('SADD', KEYS[1], ARGV[1]) .. KEYS[2]")  # type: ignore[arg-type]
    for i in range(30):
        runner = f"runner-{i}"
        reply = await script([layout.runner_apps(runner), layout.owner(runner)], [f"app-{i}"])
        assert reply == f"1{layout.owner(runner)}".encode()
    # Keys of two subjects in one script: the cluster refuses, as it must.
    with pytest.raises(redis.exceptions.RedisClusterException):
        await script([layout.runner_apps("runner-1"), layout.runner_apps("runner-2")], ["x"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(min_size=1, max_size=12), st.binary(min_size=1, max_size=12)),
        min_size=1,
        max_size=40,
    )
)
def test_remembered_key_slots_are_the_keys_slots(names: list[str | bytes]) -> None:
    """The client remembers each key's slot (``_key_slot``), also across a forgetting when
    the memory is full: what it answers is redis-py's CRC16 of the encoded key, every time."""
    client = cluster_client("redis+cluster://127.0.0.1:1")
    with patch("pairing.store.cluster._SLOT_CACHE_MAX", 7):
        for _ in range(2):
            for name in names:
                raw = name.encode() if isinstance(name, str) else name
                assert client._key_slot(name) == key_slot(raw)  # type: ignore[attr-defined]
        assert len(client._slots) <= 7  # type: ignore[attr-defined]


async def test_the_client_follows_a_failover(own_cluster: RedisClusterProcess) -> None:
    client = cluster_client(own_cluster.url)
    try:
        layout = keys.CLUSTER
        names = [layout.heartbeat(f"runner-{i}") for i in range(30)]
        for name in names:
            await client.set(name, "before")
        await asyncio.to_thread(own_cluster.wait_replicated)
        killed = own_cluster.kill_master()
        await asyncio.to_thread(own_cluster.wait_promoted, killed)
        # Until the client has the new slot map, commands to the killed master's slots
        # fail (UNAVAILABLE to a caller); then every key is served again, data intact
        # (the replica had it), without a new client.
        deadline = time.monotonic() + 30
        while True:
            try:
                values = [await client.get(name) for name in names]
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.ClusterDownError):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert values == [b"before"] * len(names)
        await client.set(names[0], "after")
        assert await client.get(names[0]) == b"after"
    finally:
        await client.aclose()


#: Keeps the server busy for ARGV[1] microseconds (a slow script, as another client's).
_BUSY = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
while true do
  local n = redis.call('TIME')
  if tonumber(n[1]) * 1000000 + tonumber(n[2]) - start > tonumber(ARGV[1]) then break end
end
return 1
"""


async def test_a_command_that_timed_out_is_not_sent_again(
    redis_cluster: RedisClusterProcess,
) -> None:
    """The single-node rule on a cluster too. A master busy for 0.45 s runs the INCR it was
    sent once it is free, after the 0.3 s timeout; upstream's cluster client would have sent
    it again on a new connection meanwhile and answered 2."""
    client = cluster_client(redis_cluster.url, socket_timeout=0.3)
    try:
        key = keys.CLUSTER.heartbeat("r-timeout")
        await client.set(key, 0)
        owner = client.get_node_from_key(key)
        assert owner is not None

        def busy() -> None:
            with redis.Redis(port=owner.port, socket_timeout=5) as other:
                other.eval(_BUSY, 0, 450_000)

        slow = asyncio.create_task(asyncio.to_thread(busy))
        await asyncio.sleep(0.05)  # the busy script runs
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.incr(key)
        await slow
        # The late command runs once the master is free (it was sent); then a little more
        # time, in which a resent one would have run too.
        deadline = time.monotonic() + 5
        while await client.get(key) != b"1":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert await client.get(key) == b"1"
    finally:
        await client.delete(keys.CLUSTER.heartbeat("r-timeout"))
        await client.aclose()


async def test_every_master_down_is_a_connection_error_until_they_are_back(
    own_cluster: RedisClusterProcess,
) -> None:
    """An outage of the whole cluster surfaces as on one Redis (ConnectionError: the
    gateway's UNAVAILABLE), not as upstream's RedisClusterException, and the same client
    serves again once the masters are back: it still asks the URL's nodes for the slot map."""
    client = cluster_client(own_cluster.url)
    try:
        names = [keys.CLUSTER.heartbeat(f"runner-{i}") for i in range(12)]
        for name in names:
            await client.set(name, "before")
        masters = own_cluster.master_nodes()
        for node in masters:
            node.stop()
        for name in names[:3]:
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.get(name)
        for node in masters:
            own_cluster.restart(node)
        await asyncio.to_thread(own_cluster.wait_ok)
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.set(names[0], "after")
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        # (restarted empty, as a redis-server without persistence does)
        assert await client.get(names[0]) == b"after"
        assert await client.get(names[1]) is None
    finally:
        await client.aclose()


async def test_the_store_answers_while_any_master_does(own_cluster: RedisClusterProcess) -> None:
    """``ping`` (the store half of /readyz) on a cluster: a frozen master does not hold the
    answer up (it comes from the first master that answers), and it does not send the client
    into a full reload that the healthy masters' commands would wait for; with every master
    down it is an outage (ConnectionError)."""
    client = cluster_client(own_cluster.url, socket_timeout=5)
    try:
        await client.initialize()
        frozen = own_cluster.master_nodes()[0]
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(2):  # well within the frozen master's 5 s timeout
                assert await ping(client) is True
                assert await ping(client) is True
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        for node in own_cluster.master_nodes():
            node.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            await ping(client)
    finally:
        await client.aclose()
