"""Redis Cluster: ``redis+cluster://`` (``rediss+cluster://`` for TLS) to redis-py's cluster client.

Why redis-py's ``RedisCluster`` rather than the pipelined link (``autopipeline``): the link is
one connection to one server, and a cluster needs a connection per master, routing by hash
slot, MOVED/ASK redirections and a fresh slot map after a failover, which redis-py already
does (and its ``ClusterPubSub`` follows sharded subscriptions across slot moves). The cost is
redis-py's per-command CPU on the gateway side; a cluster is chosen for Redis-side capacity,
and gateway replicas scale out on their own.

The URL names startup nodes only; the client learns every master and replica from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from pairing.store.client import CLUSTER_SCHEMES, lost_connection_retry


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """What a ``redis+cluster://[[user]:password@]host:port[,host:port...][/0]`` URL says."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool
    #: ``?ssl_cert_reqs=none`` etc. are passed through as client options.
    options: dict[str, str]


def parse_cluster_url(url: str) -> ClusterURL:
    if not is_cluster_url(url):
        raise ValueError(f"redis_url: not a cluster URL: {url!r}")
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"redis_url: cluster node {entry!r} must be host:port")
        nodes.append((host.strip("[]"), int(port)))
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise ValueError("redis_url: a Redis Cluster has only database 0")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return ClusterURL(
        nodes=tuple(nodes),
        username=unquote(user) or None,
        password=unquote(password) or None,
        ssl=url.startswith("rediss+"),
        options=options,
    )


class _RedisCluster(RedisCluster):
    """redis-py's cluster client, resending a command only when it cannot have run.

    Upstream also resends after a timeout (``RedisCluster.ERRORS_ALLOW_RETRY``), when the
    server may have run the command and only answered late; the scripts are not
    idempotent. A lost connection (the single-node rule), a CLUSTERDOWN reply or a slot
    with no master yet (both refused before running) are still resent once, on a fresh
    slot map.
    """

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        """No node answering (every master down) is an outage, a ConnectionError as on one
        Redis; upstream raises RedisClusterException, which is no RedisError."""
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except RedisClusterException as exc:
            raise RedisConnectionError(f"Redis Cluster unreachable: {exc}") from exc


def cluster_client(
    url: str,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    max_connections: int | None = 64,
) -> RedisCluster:
    """A cluster client with the single-node client's timeouts and retry rule.

    As there, a command is retried only on a lost connection, never on a timeout (the
    server may have run it; the scripts are not idempotent). A MOVED or ASK reply is
    followed by redis-py itself, and a connection error refreshes its slot map, which is
    how a failover (a replica promoted) is found.
    """
    spec = parse_cluster_url(url)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        **lost_connection_retry(),
        "protocol": 2,
        "require_full_coverage": True,
        # The URL's nodes stay the ones asked for the slot map (upstream would replace them
        # by the masters it found: after every master was down at once it could ask no one
        # else, and a managed cluster's configuration endpoint would be forgotten).
        "dynamic_startup_nodes": False,
        "username": spec.username,
        "password": spec.password,
        "ssl": spec.ssl,
        **spec.options,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    startup = [ClusterNode(host, port) for host, port in spec.nodes]
    return _RedisCluster(startup_nodes=startup, **options)
