"""The fan-out's pub/sub on a Redis Cluster: sharded channels (SSUBSCRIBE, Redis 7+).

A plain ``PUBLISH`` on a cluster is broadcast to every node over the cluster bus, so every
shard pays for every message. A sharded channel lives in the slot of its name, as a key
does: ``SPUBLISH`` goes to the one master owning it, and only connections subscribed there
hear it. This subscriber keeps one connection per master that owns a channel it wants,
sends one ``SSUBSCRIBE`` per channel (a command's channels must share a slot), and reads
them all, as socket.io's sharded redis-adapter does.

It speaks to the fan-out as ``subscriber.Subscriber`` does, in RESP2 replies: ``smessage``
comes out as ``message`` and ``ssubscribe`` as ``subscribe``; a ping goes to every
connection and one ``pong`` comes out once all of them have answered (or were dropped).

A failover is local. A master that loses a channel's slot tells its subscribers with an
unasked-for ``sunsubscribe``; a failed master closes its connection, or stops answering
(still owing a pong when the next ping is due). Only that master's channels are then
resubscribed, on their owners in a new slot map (the promoted replica, once it is), in the
background with backoff; the other masters' connections never stop delivering, and the
fan-out's listener (and with it ``/readyz``) stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError

from pairing.store.autopipeline import packer
from pairing.store.subscriber import Subscriber
from pairing.store.upstream import streams

log = logging.getLogger("pairing.store.sharded")

#: What the per-master readers hand on: (link, reply or the error that ended it); None only
#: wakes ``read`` to send new requests.
_Item = tuple["_NodeLink", list[Any] | BaseException] | None

_RENAMED = {b"smessage": b"message", b"ssubscribe": b"subscribe", b"sunsubscribe": b"unsubscribe"}


class _NodeLink:
    """One pub/sub connection to one master, read by its own task into a shared queue."""

    def __init__(self, node: ClusterNode, out: asyncio.Queue[_Item]) -> None:
        self.node = node
        self.conn: Any = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.awaiting_pong = False
        self._out = out
        self._pack: Any = None

    async def open(self) -> None:
        conn: Any = self.node.connection_class(**self.node.connection_kwargs)
        try:
            await conn.connect()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self.conn = conn
        self._pack = packer(conn.encoder)
        reader, self.writer = streams(conn)
        self.task = asyncio.create_task(self._read(reader))

    def send(self, *command: str) -> None:
        if self.writer is None:
            raise RedisConnectionError("the sharded pub/sub connection is closed")
        self.writer.write(self._pack(command))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(protocolError=InvalidResponse, replyError=Exception)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise RedisConnectionError(f"{self.node.name} closed the pub/sub connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if isinstance(reply, Exception):
                        raise RedisConnectionError(f"{self.node.name}: {reply}")
                    self._out.put_nowait((self, reply))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._out.put_nowait((self, exc))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        conn, self.conn, self.writer = self.conn, None, None
        if conn is not None:
            await conn.disconnect(nowait=True)


class ShardedSubscriber(Subscriber):
    """``subscriber.Subscriber`` over sharded channels of a ``RedisCluster``.

    A failure is local to its master: the channels of a connection that ended (or stopped
    answering pings, or lost a channel's slot) are resubscribed on their owners in a new slot
    map, in the background with backoff, while the other connections go on delivering.
    ``read`` raises only after ``abort``.
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._links: dict[str, _NodeLink] = {}
        self._opening: dict[str, asyncio.Task[_NodeLink]] = {}
        #: channel -> the node name it was subscribed on; what an unasked sunsubscribe means.
        self._channels: dict[str, str] = {}
        self._leaving: set[str] = set()
        #: Wanted channels whose connection or slot was lost: resubscribed by ``_repair``.
        self._orphans: set[str] = set()
        #: Channels subscribed to (or to be), whatever their connection's state.
        self._wanted: set[str] = set()
        self._attaching: set[asyncio.Task[None]] = set()
        self._repairing: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, tuple[str, ...]]] = []
        self._broken = False
        self._pong_due = False
        #: Channels resubscribed after a failure (for tests and logs).
        self.resubscribed = 0

    async def connect(self) -> None:
        """Load the current slot map, so that every subscription goes to today's owner."""
        # The full client first: the slot map alone would leave the client that this
        # subscriber shares with the services' commands half set up (its command parser
        # unloaded, so its next keyed command fails).
        await self._cluster.initialize()
        await self._cluster.nodes_manager.initialize()

    def subscribe(self, *channels: str) -> None:
        if channels:
            self._request("SSUBSCRIBE", channels)

    def unsubscribe(self, *channels: str) -> None:
        if channels:
            self._request("SUNSUBSCRIBE", channels)

    def ping(self) -> None:
        self._request("PING", ())

    def _request(self, command: str, channels: tuple[str, ...]) -> None:
        """Queued for ``read``, which alone writes (it may await a new connection)."""
        self._pending.append((command, channels))
        self._queue.put_nowait(None)

    async def _flush(self) -> None:
        """Send what was asked since the last read; opens connections to new owners."""
        pending, self._pending = self._pending, []
        for command, channels in pending:
            if command == "PING":
                self._ping_round()
                continue
            for channel in channels:
                if command == "SSUBSCRIBE":
                    self._wanted.add(channel)
                    self._leaving.discard(channel)
                    self._subscribe_soon(channel)
                else:
                    self._wanted.discard(channel)
                    self._orphans.discard(channel)
                    name = self._channels.get(channel)
                    if name is not None and name in self._links:
                        self._leaving.add(channel)
                        self._links[name].send("SUNSUBSCRIBE", channel)
                    else:
                        self._channels.pop(channel, None)

    def _ping_round(self) -> None:
        """A connection still owing the last round's pong (a master silent for a whole ping
        interval) is dropped and its channels resubscribed; the others get a PING, and one
        pong goes out once they have all answered."""
        for link in list(self._links.values()):
            if link.awaiting_pong:
                self._drop(link, "no pong")
        self._pong_due = True
        for link in self._links.values():
            link.awaiting_pong = True
            try:
                link.send("PING")
            except RedisConnectionError:
                link.awaiting_pong = False

    def _pong(self) -> list[Any] | None:
        if self._pong_due and not any(link.awaiting_pong for link in self._links.values()):
            self._pong_due = False
            return [b"pong", b""]
        return None

    def _subscribe_soon(self, channel: str) -> None:
        """SSUBSCRIBE now when the owner's connection is open, else once it is (in the
        background: ``read`` never waits for a connection, so one master that does not
        answer cannot hold up the others' messages)."""
        try:
            node = self._cluster.get_node_from_key(channel)
        except Exception:
            node = None
        link = self._links.get(node.name) if node is not None else None
        if link is not None and node is not None:
            try:
                link.send("SSUBSCRIBE", channel)
            except RedisConnectionError:
                self._orphan(channel)
            else:
                self._channels[channel] = node.name
            return
        task = asyncio.ensure_future(self._attach(channel))
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)

    async def _attach(self, channel: str) -> None:
        if channel in self._wanted and not await self._subscribe_on_owner(channel):
            self._orphan(channel)

    async def _subscribe_on_owner(self, channel: str) -> bool:
        """SSUBSCRIBE ``channel`` on the master owning its slot now; False if none answers."""
        try:
            node = self._cluster.get_node_from_key(channel)
        except Exception:
            return False
        if node is None:
            return False
        try:
            link = self._links.get(node.name) or await self._open(node)
            link.send("SSUBSCRIBE", channel)
        except (RedisError, OSError):
            return False
        self._channels[channel] = node.name
        return True

    async def _open(self, node: ClusterNode) -> _NodeLink:
        """One connection per master, however many callers want it at once."""
        task = self._opening.get(node.name)
        if task is None:
            task = self._opening[node.name] = asyncio.ensure_future(self._connect(node))
            task.add_done_callback(lambda _: self._opening.pop(node.name, None))
        return await asyncio.shield(task)

    async def _connect(self, node: ClusterNode) -> _NodeLink:
        link = _NodeLink(node, self._queue)
        await link.open()
        self._links[node.name] = link
        return link

    # -- failures ---------------------------------------------------------------------------

    def _orphan(self, channel: str) -> None:
        self._channels.pop(channel, None)
        if channel not in self._wanted:
            return
        self._orphans.add(channel)
        if self._repairing is None and not self._broken:
            self._repairing = asyncio.ensure_future(self._repair())

    def _drop(self, link: _NodeLink, why: str) -> None:
        """``link``'s master failed: close it and resubscribe its channels elsewhere."""
        if self._links.get(link.node.name) is link:
            del self._links[link.node.name]
        link.awaiting_pong = False
        lost = [c for c, name in self._channels.items() if name == link.node.name]
        log.warning(
            "sharded pub/sub connection to %s lost (%s); resubscribing its %d channels",
            link.node.name,
            why,
            len(lost),
        )
        closer = asyncio.ensure_future(link.close())
        _closing.add(closer)
        closer.add_done_callback(_closing.discard)
        for channel in lost:
            if channel in self._leaving:
                self._leaving.discard(channel)
                self._channels.pop(channel, None)
            else:
                self._orphan(channel)

    async def _repair(self) -> None:
        """Until every orphaned channel is subscribed again: a new slot map, then each
        owner's channels on it, one connection attempt per owner (a failed master's slots
        answer once its replica is promoted). Retried every 50 ms, slowing to 200 ms, and at
        once whenever the cluster client loads a new slot map (a command found the promoted
        replica); the map is asked for at most every 100 ms by the cluster client."""
        pause = 0.05
        try:
            while self._orphans and not self._broken:
                await _reload_slot_map(self._cluster)
                owners: dict[str, tuple[ClusterNode, list[str]]] = {}
                for channel in list(self._orphans):
                    if channel not in self._wanted:
                        self._orphans.discard(channel)  # unsubscribed meanwhile
                        continue
                    try:
                        node = self._cluster.get_node_from_key(channel)
                    except Exception:
                        node = None
                    if node is not None:
                        owners.setdefault(node.name, (node, []))[1].append(channel)
                links = await asyncio.gather(
                    *(self._link_to(node) for node, _ in owners.values()),
                    return_exceptions=True,
                )
                for (node, channels), link in zip(owners.values(), links, strict=True):
                    if not isinstance(link, _NodeLink):
                        continue
                    for channel in channels:
                        if channel in self._orphans and channel in self._wanted:
                            link.send("SSUBSCRIBE", channel)
                            self._channels[channel] = node.name
                            self._orphans.discard(channel)
                            self.resubscribed += 1
                if self._orphans:
                    await _map_reload_or(self._cluster, pause)
                    pause = min(pause * 2, 0.2)
        finally:
            self._repairing = None

    async def _link_to(self, node: ClusterNode) -> _NodeLink:
        return self._links.get(node.name) or await self._open(node)

    def _translate(self, link: _NodeLink, reply: list[Any]) -> list[Any] | None:
        kind = reply[0]
        if kind == b"pong":
            link.awaiting_pong = False
            return self._pong()
        if kind == b"sunsubscribe":
            channel = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
            if channel not in self._leaving:
                # Not asked for: the channel's slot moved to another master.
                if self._channels.get(channel) == link.node.name:
                    self._orphan(channel)
                return None
            self._leaving.discard(channel)
            self._channels.pop(channel, None)
        return [_RENAMED.get(kind, kind), *reply[1:]]

    async def read(self) -> list[list[Any]]:
        replies: list[list[Any]] = []
        while not replies:
            if self._broken:
                raise RedisConnectionError("the sharded pub/sub subscriber was aborted")
            await self._flush()
            pong = self._pong()  # (no connection owed one)
            if pong is not None:
                replies.append(pong)
                break
            item = await self._queue.get()
            while True:
                if item is not None:
                    link, reply = item
                    if isinstance(reply, BaseException):
                        if self._links.get(link.node.name) is link:
                            self._drop(link, repr(reply))
                        pong = self._pong()
                        if pong is not None:
                            replies.append(pong)
                    elif self._links.get(link.node.name) is link:
                        translated = self._translate(link, reply)
                        if translated is not None:
                            replies.append(translated)
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
        return replies

    def abort(self) -> None:
        self._broken = True
        self._queue.put_nowait(None)
        for link in self._links.values():
            if link.writer is not None:
                link.writer.transport.abort()

    async def aclose(self) -> None:
        self._broken = True
        repairing, self._repairing = self._repairing, None
        for task in [*self._attaching, *([repairing] if repairing else [])]:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()


async def _reload_slot_map(cluster: RedisCluster) -> None:
    """The cluster client's shared, throttled refresh when it has one, else redis-py's."""
    refresh = getattr(cluster, "refresh_slot_map", None)
    with contextlib.suppress(Exception):
        if refresh is not None:
            await refresh()
        else:
            await cluster.nodes_manager.initialize()


async def _map_reload_or(cluster: RedisCluster, pause: float) -> None:
    """Sleep ``pause`` seconds, or less if the cluster client loads a slot map meanwhile (a
    command that found the promoted replica: its channels can move there at once)."""
    loaded = getattr(cluster, "slot_map_loaded", None)
    if loaded is None:
        await asyncio.sleep(pause)
        return
    event: asyncio.Event = loaded()
    event.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), pause)


#: Connections of dropped links being closed, kept referenced until done.
_closing: set[asyncio.Task[None]] = set()
