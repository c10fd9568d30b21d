"""The store under a scenario test: one redis-server or a 3-master Redis Cluster, one API.

Scenario tests (tests/scenarios/: test_replicas.py, test_faults.py, test_cluster_scenarios.py)
take the ``backend`` or ``own_backend`` fixture (tests/conftest.py), which runs each of them
on both; the key names come from ``backend.layout``, the faults from the methods here (on a
cluster an outage is every master down, the replicas left running).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import redis

from pairing import keys
from pairing.store import Redis, connect
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess


@dataclass
class Backend:
    """``single`` or ``cluster`` is set, never both."""

    single: RedisProcess | None = None
    cluster: RedisClusterProcess | None = None
    #: The masters ``stop`` stopped, for ``start``.
    _stopped: list[RedisProcess] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "cluster" if self.cluster is not None else "single"

    @property
    def url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        assert self.single is not None
        return self.single.url

    @property
    def layout(self) -> keys.KeyLayout:
        return keys.layout_for(self.url)

    def client(self) -> Redis:
        """A client as the gateway builds it (the cluster client for a cluster)."""
        return connect(self.url)

    def masters(self) -> list[RedisProcess]:
        """The nodes that serve keys now (the one server, or the cluster's masters)."""
        if self.cluster is not None:
            return self.cluster.master_nodes()
        assert self.single is not None
        return [self.single]

    def nodes(self) -> list[RedisProcess]:
        """Every running node, replicas included."""
        if self.cluster is not None:
            return self.cluster.running()
        assert self.single is not None
        return [self.single] if self.single.proc is not None else []

    def node_client(self, node: RedisProcess) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)

    # -- faults ---------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGKILL the store: the server, or every master (data gone, as with one server)."""
        self._stopped = self.masters()
        for node in self._stopped:
            node.stop()

    def start(self) -> None:
        """Start what ``stop`` stopped, on the same ports; returns once it serves again."""
        for node in self._stopped:
            node.start()
        self._stopped = []
        if self.cluster is not None:
            self.cluster.wait_ok()

    def freeze(self) -> list[int]:
        """SIGSTOP every master (connections open, nothing answers); returns their pids."""
        pids = [n.proc.pid for n in self.masters() if n.proc is not None]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    # -- what the store saw -----------------------------------------------------------------

    def command_calls(self, command: str, *, replicas: bool = False) -> int:
        """How many times ``command`` ran, summed over the masters (with ``replicas``, over
        every running node: a replica runs what its master propagates, SPUBLISH included)."""
        total = 0
        for node in self.nodes() if replicas else self.masters():
            with self.node_client(node) as c:
                entry = c.info("commandstats").get(f"cmdstat_{command.lower()}")
            total += int(entry["calls"]) if entry else 0
        return total

    def publishes(self) -> int:
        """Fan-out messages sent: PUBLISH on one server, SPUBLISH on a cluster."""
        return self.command_calls("spublish" if self.cluster is not None else "publish")

    def keys_per_master(self) -> dict[int, list[str]]:
        """Every key, by the port of the master holding it."""
        out = {}
        for node in self.masters():
            with self.node_client(node) as c:
                out[node.port] = sorted(str(k) for k in c.keys("*"))
        return out


async def flushed(backend: Backend) -> Redis:
    """A client of ``backend`` whose data was just flushed (every master's, on a cluster)."""
    client = backend.client()
    await client.flushdb()
    return client
