"""tests/support/redis_cluster.py: the private cluster the cluster-mode tests run on."""

from __future__ import annotations

import redis

from tests.support.redis_cluster import RedisClusterProcess


def test_three_masters_each_with_a_replica_serve_every_slot(
    redis_cluster: RedisClusterProcess,
) -> None:
    masters = redis_cluster.master_nodes()
    assert len(masters) == 3
    with redis_cluster.client(redis_cluster.nodes[0]) as c:
        info = str(c.execute_command("CLUSTER", "INFO"))
    assert "cluster_slots_assigned:16384" in info
    assert "cluster_slots_ok:16384" in info
    for master in masters:
        with redis_cluster.client(master) as c:
            replication = c.info("replication")
        assert replication["connected_slaves"] == 1
        assert replication["slave0"]["state"] == "online"
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")
    assert redis_cluster.url.count(",") == 5


def test_a_killed_master_is_replaced_by_its_replica(own_cluster: RedisClusterProcess) -> None:
    before = {n.port for n in own_cluster.master_nodes()}
    killed = own_cluster.kill_master()
    own_cluster.wait_promoted(killed)
    after = {n.port for n in own_cluster.master_nodes()}
    assert killed.port not in after
    assert len(after) == 3
    assert len(after - before) == 1  # exactly one replica took over
    # The killed node comes back as a replica; the promoted one stays master.
    own_cluster.restart(killed)
    own_cluster.wait_ok()
    assert {n.port for n in own_cluster.master_nodes()} == after
    with redis.Redis(port=killed.port, socket_timeout=2, decode_responses=True) as c:
        assert c.info("replication")["role"] == "slave"
