"""Redis Cluster: ``redis+cluster://`` (``rediss+cluster://`` for TLS), pipelined per master.

Why redis-py's ``RedisCluster`` extended with the project's own link per master, rather than
redis-py's cluster client as it is or another client:

- redis-py's cluster client sends every command alone (a pool checkout and one write per
  command), which cost a 3-master cluster two to three times one Redis's CPU per operation;
  its pipeline object batches only what one caller queues, not what concurrent callers send.
- coredis (6.9) and valkey-glide (2.5), both on PyPI, would each be a second Redis client
  beside redis-py (which the single-node link, Sentinel and pub/sub are built on), with
  their own connection, retry and timeout rules (glide's in a Rust core), where the
  gateway's UNAVAILABLE acks rely on one rule: resend only what cannot have run.
- The single-node link (``autopipeline.Link``) already is what the cluster lacks: every
  command of one loop turn in one write, replies matched in order, the single-node timeouts
  and retry rule. Here there is one per master, chosen by the key's slot from redis-py's slot
  map, which keeps doing what it does well: learning the map, MOVED/ASK bookkeeping, the
  commands that go to every master (SCRIPT LOAD, PING).

The URL names startup nodes only; the client learns every master and replica from them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import PRIMARY
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pairing.store.autopipeline import Durability, Link
from pairing.store.client import CLUSTER_SCHEMES, lost_connection_retry
from pairing.store.upstream import EMPTY_RESPONSE, NEVER_DECODE, parse_reply


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


#: Commands whose first argument is the key (or, for SPUBLISH, the shard channel) that
#: routes them, with one request and one reply: sent on the owning master's pipelined link.
#: EVALSHA routes by its first key. Everything else takes redis-py's path.
KEYED = frozenset(
    {
        "GET",
        "SET",
        "DEL",
        "EXISTS",
        "MGET",
        "INCR",
        "INCRBY",
        "SMEMBERS",
        "SISMEMBER",
        "ZADD",
        "XADD",
        "XREVRANGE",
        "SPUBLISH",
    }
)

#: Commands of the above whose every argument after the name is a key.
_MULTI_KEY = frozenset({"DEL", "EXISTS", "MGET"})

#: Redirections followed for one call before giving up (upstream's ``RedisClusterRequestTTL``).
_MAX_REDIRECTS = 16
#: A slot map refresh is not repeated sooner than this after the last one (a dead master's
#: every caller would otherwise each ask the other masters for the map).
_REFRESH_EVERY_S = 0.1
#: Keys whose slot one client remembers (a relayed message names the same few keys of its
#: app every time) before it forgets them all and starts over.
_SLOT_CACHE_MAX = 65_536


class _RedisCluster(RedisCluster):
    """redis-py's cluster client, with its keyed commands pipelined per master.

    The slot map, MOVED/ASK bookkeeping, key slots and everything that is not a keyed
    command (SCRIPT LOAD on every master, PING of every master, CLUSTER commands) stay
    redis-py's. A keyed command instead goes on the owning master's ``Link`` (the single-node
    link, one connection per master): every command of one loop turn for that master in one
    write, replies matched in order, so a master's CPU per command is what one Redis spends.

    Retry rule, as on one Redis: a command is resent once when it cannot have run or its
    connection died under it (lost connection, connection refused, CLUSTERDOWN, a slot with
    no master yet), after refreshing the slot map (how a failover's promoted replica is
    found); never after a timeout (the server may have run it; the scripts are not
    idempotent). MOVED, ASK and TRYAGAIN were refused by the server and are followed.
    """

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    _links: dict[str, Link] | None = None
    #: key -> its slot: encoding a key and its CRC16 cost more than a lookup (a key's slot
    #: never changes; which master owns the slot is the slot map's business).
    _slots: dict[Any, int] | None = None
    #: Set by ``cluster_client`` (``redis.wait_replicas``): writes wait for each master's
    #: replicas.
    durability: Durability | None = None
    _refreshing: asyncio.Task[None] | None = None
    _refreshed_at: float = -1e9
    _map_loaded: asyncio.Event | None = None

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

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        name = args[0]
        if (
            (name in KEYED or (name == "EVALSHA" and len(args) > 3 and args[2] not in (0, "0")))
            and "target_nodes" not in kwargs
            and NEVER_DECODE not in kwargs
        ):
            return await self._pipelined(args, kwargs)
        return await super().execute_command(*args, **kwargs)

    async def _pipelined(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        await self.initialize()  # (nothing to do once there is a slot map)
        name = args[0]
        slot = self._slot(name, args)
        retried = False
        redirects = 0
        ask: ClusterNode | None = None
        while True:
            try:
                if ask is not None:
                    node, ask = ask, None
                    response = await self._link(node).call_asking(args)
                else:
                    node = self.nodes_manager.get_node_from_slot(slot)
                    response = await self._link(node).call(args)
                break
            except (MovedError, AskError) as exc:
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise ClusterError("too many redirections") from exc
                if isinstance(exc, AskError):
                    ask = self._node_at(exc.host, exc.port)
                else:
                    await self.nodes_manager.move_slot(exc)
            except TryAgainError:
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise
                await asyncio.sleep(0.05)
            except RedisTimeoutError:
                # Not resent; the map is refreshed for the next callers (a master gone silent).
                self._refresh_soon()
                raise
            except (RedisConnectionError, ClusterDownError, SlotNotCoveredError) as exc:
                if isinstance(exc, ClusterDownError) and not retried:
                    await asyncio.sleep(0.25)  # as upstream: a failover takes a moment
                await self.refresh_slot_map()
                if retried:
                    raise
                retried = True
            except ResponseError:
                if EMPTY_RESPONSE in options:
                    return options[EMPTY_RESPONSE]
                raise
        return await parse_reply(self, name, response, options)

    def master_pings(self) -> list[Awaitable[Any]]:
        """A PING of every master on its pipelined link (b"PONG" or the error each).

        Not redis-py's ``ping(target_nodes=...)``: a master that does not answer there marks
        the whole client for a full reload (the slot map and the command table) before its
        next command, which every command of every healthy master would then wait for, on
        every readiness probe while one master is down."""
        return [self._link(node).call(("PING",)) for node in self.get_primaries()]

    def _slot(self, name: str, args: tuple[Any, ...]) -> int:
        """The one slot of the command's keys; keys of several slots are refused here, as
        upstream does (RedisClusterException), before anything is sent."""
        if name == "EVALSHA":
            keys = args[3 : 3 + int(args[2])]
        elif name in _MULTI_KEY:
            keys = args[1:]
        else:
            return self._key_slot(args[1])
        slot = self._key_slot(keys[0])
        for key in keys[1:]:
            if self._key_slot(key) != slot:
                raise RedisClusterException(f"{name} - all keys must map to the same key slot")
        return slot

    def _key_slot(self, key: Any) -> int:
        slots = self._slots
        if slots is None:
            slots = self._slots = {}
        slot = slots.get(key)
        if slot is None:
            if len(slots) >= _SLOT_CACHE_MAX:
                slots.clear()
            slot = slots[key] = self.keyslot(key)
        return slot

    def _link(self, node: ClusterNode) -> Link:
        links = self._links
        if links is None:
            links = self._links = {}
        link = links.get(node.name)
        if link is None:
            link = links[node.name] = Link(
                lambda: _open(node), node.connection_kwargs.get("socket_timeout"), self.durability
            )
        return link

    def _node_at(self, host: str, port: int) -> ClusterNode:
        node = self.nodes_manager.get_node(host=host, port=port)
        if node is None:
            node = ClusterNode(host, port, PRIMARY, **self.nodes_manager.connection_kwargs)
        return node

    async def refresh_slot_map(self) -> None:
        """A new slot map from the nodes that answer; callers failing together share one
        refresh, and one within ``_REFRESH_EVERY_S`` of the last is skipped."""
        task = self._refreshing
        if task is None:
            loop = asyncio.get_running_loop()
            if loop.time() - self._refreshed_at < _REFRESH_EVERY_S:
                return
            task = self._refreshing = asyncio.ensure_future(self._reload())
        with contextlib.suppress(Exception):
            await asyncio.shield(task)

    def _refresh_soon(self) -> None:
        task = asyncio.ensure_future(self.refresh_slot_map())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _reload(self) -> None:
        try:
            await self.nodes_manager.initialize()
            self.slot_map_loaded().set()  # (the sharded subscriber resubscribes on it)
        finally:
            self._refreshing = None
            self._refreshed_at = asyncio.get_running_loop().time()

    def slot_map_loaded(self) -> asyncio.Event:
        """Set whenever a refresh loaded the slot map (a waiter clears it first): a failover
        found by a command is then found by the sharded subscriber at once too."""
        if self._map_loaded is None:
            self._map_loaded = asyncio.Event()
        return self._map_loaded

    async def aclose(self) -> None:
        links, self._links = self._links, None
        for link in (links or {}).values():
            await link.aclose()
        await super().aclose()


async def any_master_answers(client: RedisCluster) -> bool:
    """True as soon as one master answers PING; with none answering, the first error."""
    await client.initialize()
    if isinstance(client, _RedisCluster):
        calls = client.master_pings()
    else:
        calls = [client.ping(target_nodes=node) for node in client.get_primaries()]
    tasks = [asyncio.ensure_future(call) for call in calls]
    first: BaseException | None = None
    try:
        for done in asyncio.as_completed(tasks):
            try:
                if await done in (True, b"PONG", "PONG"):
                    return True
            except Exception as exc:
                first = first or exc
    finally:
        for task in tasks:
            task.cancel()
    if first is not None:
        raise first
    return False


#: Background refreshes, kept referenced until done.
_background: set[asyncio.Task[None]] = set()


async def _open(node: ClusterNode) -> Any:
    """A connected redis-py connection to ``node`` (its TLS, AUTH, timeouts), not pooled."""
    conn: Any = node.connection_class(**node.connection_kwargs)
    try:
        await conn.connect()
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    return conn


def cluster_client(
    url: str,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    max_connections: int | None = 64,
    durability: Durability | None = None,
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
    client = _RedisCluster(startup_nodes=startup, **options)
    client.durability = durability
    return client
