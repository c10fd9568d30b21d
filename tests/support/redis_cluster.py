"""A private Redis Cluster for the tests and `make bench-cluster`: 3 masters and 3 replicas,
started and stopped by pid.

Each node is a ``RedisProcess`` with cluster mode on and its own bus port (``cluster-port``,
Redis 7), so no port is guessed; ``redis-cli --cluster create`` assigns the slots and the
replicas, then ``wait_ok`` waits until every node agrees that all 16384 slots are served. A
short node timeout lets a replica take over a killed master within about two seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field

import redis

from tests.support.redis_server import RedisProcess, free_port

#: Milliseconds before a silent master is failed (replica promoted); small for fast tests.
NODE_TIMEOUT_MS = 1000


def _node(port: int | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS) -> RedisProcess:
    bus = free_port()
    proc = RedisProcess() if port is None else RedisProcess(port=port)
    proc.extra_args = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(node_timeout_ms),
        # A failed master stops only its own slots (the default stops the whole cluster
        # until its replica is promoted); docs/deploy.md recommends the same.
        "--cluster-require-full-coverage",
        "no",
        "--cluster-port",
        str(bus),
        # A replica may take over however long its link to the master was down.
        "--cluster-replica-validity-factor",
        "0",
        # Replicas sync at once instead of after the default 5 s wait for more of them.
        "--repl-diskless-sync-delay",
        "0",
    )
    return proc


@dataclass
class RedisClusterProcess:
    """Six cluster nodes on free ports; ``url`` is the gateway's ``redis+cluster://`` URL."""

    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found")
        count = self.masters * (1 + self.replicas_per_master)
        self.nodes = [_node(node_timeout_ms=self.node_timeout_ms) for _ in range(count)]
        try:
            self._create(cli)
        except BaseException:
            self.close()
            raise

    def _create(self, cli: str) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()

    def client(self, node: RedisProcess) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2, decode_responses=True)

    def running(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None]

    def _view(self, node: RedisProcess) -> tuple[str, dict[str, str]]:
        """(cluster_state, {address: role}) as ``node`` sees the cluster."""
        with self.client(node) as c:
            info = str(c.execute_command("CLUSTER", "INFO"))
            raw = c.execute_command("CLUSTER", "NODES")
        state = next(
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("cluster_state:")
        )
        text = str(raw)
        roles: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            address = parts[1].split("@", 1)[0]
            flags = parts[2].split(",")
            if "fail" in flags or "fail?" in flags:
                roles[address] = "fail"
            else:
                roles[address] = "master" if "master" in flags else "replica"
        return state, roles

    def master_nodes(self) -> list[RedisProcess]:
        """The running nodes that serve slots now, as the cluster itself reports."""
        _, roles = self._view(self.running()[0])
        return [n for n in self.running() if roles.get(f"127.0.0.1:{n.port}") == "master"]

    def _replicas_ready(self) -> bool:
        """Every master has its replicas connected and in sync (so a failover can happen)."""
        for node in self.master_nodes():
            with self.client(node) as c:
                info = c.info("replication")
            online = [k for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if sum(info[k].get("state") == "online" for k in online) < self.replicas_per_master:
                return False
        return True

    def wait_ok(self, timeout: float = 30.0, *, replicas: bool = True) -> None:
        """Until every running node reports cluster_state:ok and they agree on the masters.

        With ``replicas``, also until every master's replicas are online (not after a
        failover whose old master is still down: the promoted one has none).
        """
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                views = [self._view(n) for n in self.running()]
            except redis.RedisError as exc:
                last = repr(exc)
            else:
                masters = [
                    sorted(a for a, r in roles.items() if r == "master") for _, roles in views
                ]
                if (
                    all(state == "ok" for state, _ in views)
                    and all(m == masters[0] for m in masters)
                    and len(masters[0]) == self.masters
                    and (not replicas or self._replicas_ready())
                ):
                    return
                last = repr(views)
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ok after {timeout}s: {last}")

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every replica has acknowledged all of its master's writes so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = False
            for node in self.master_nodes():
                with self.client(node) as c:
                    info = c.info("replication")
                offset = info["master_repl_offset"]
                slaves = [
                    v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                ]
                behind = behind or any(s.get("offset") != offset for s in slaves)
            if not behind:
                return
            time.sleep(0.05)
        raise RuntimeError("replicas did not catch up")

    def kill_master(self, node: RedisProcess | None = None) -> RedisProcess:
        """SIGKILL one master (the first by default); returns it, stopped, port kept."""
        victim = node or self.master_nodes()[0]
        victim.stop()
        return victim

    def wait_promoted(self, killed: RedisProcess, timeout: float = 30.0) -> None:
        """Until a replica has taken over ``killed``'s slots and the cluster is ok again."""
        address = f"127.0.0.1:{killed.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state, roles = self._view(self.running()[0])
            except redis.RedisError:
                state, roles = "", {}
            masters = [a for a, r in roles.items() if r == "master"]
            if state == "ok" and address not in masters and len(masters) == self.masters:
                self.wait_ok(timeout=max(1.0, deadline - time.monotonic()), replicas=False)
                return
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over {address} within {timeout}s")

    def restart(self, node: RedisProcess) -> None:
        """Start a stopped node again on its port; it rejoins (as a replica after a failover)."""
        node.start()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.nodes = []
