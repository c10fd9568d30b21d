"""The fan-out's pub/sub on a Redis Cluster: sharded channels (SSUBSCRIBE, Redis 7+).

A plain ``PUBLISH`` on a cluster is broadcast to every node over the cluster bus, so every
shard pays for every message. A sharded channel lives in the slot of its name, as a key
does: ``SPUBLISH`` goes to the one master owning it, and only connections subscribed there
hear it. This subscriber keeps one connection per master that owns a channel it wants,
sends one ``SSUBSCRIBE`` per channel (a command's channels must share a slot), and reads
them all, as socket.io's sharded redis-adapter does.

It speaks to the fan-out as ``subscriber.Subscriber`` does, in RESP2 replies: ``smessage``
comes out as ``message`` and ``ssubscribe`` as ``subscribe``; a ping goes to every
connection and one ``pong`` comes out once all of them have answered, so one silent master
is enough for the fan-out's pong deadline to break the whole subscriber.

Slot moves and failovers: a master that loses a channel's slot tells its subscribers with an
unasked-for ``sunsubscribe``; a failed master closes (or stops answering). Either way
``read`` raises, the fan-out reconnects, and ``connect`` reloads the slot map first, so
every channel is subscribed again on the master that owns it now.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from pairing.store.autopipeline import packer
from pairing.store.subscriber import Subscriber
from pairing.store.upstream import streams

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
    """``subscriber.Subscriber`` over sharded channels of a ``RedisCluster``."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._links: dict[str, _NodeLink] = {}
        #: channel -> the node name it was subscribed on; what an unasked sunsubscribe means.
        self._channels: dict[str, str] = {}
        self._leaving: set[str] = set()
        self._pending: list[tuple[str, tuple[str, ...]]] = []
        self._broken = False
        self._idle_pong = False

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
        """Queued for ``read``, which alone opens connections and writes (it may await)."""
        self._pending.append((command, channels))
        self._queue.put_nowait(None)

    async def _flush(self) -> None:
        """Send what was asked since the last read; opens connections to new owners."""
        pending, self._pending = self._pending, []
        for command, channels in pending:
            if command == "PING":
                if not self._links:
                    self._idle_pong = True
                for link in self._links.values():
                    link.awaiting_pong = True
                    link.send("PING")
                continue
            for channel in channels:
                if command == "SSUBSCRIBE":
                    node = self._cluster.get_node_from_key(channel)
                    if node is None:
                        raise RedisConnectionError(f"no master serves {channel!r}'s slot")
                    link = self._links.get(node.name) or await self._open(node)
                    self._channels[channel] = node.name
                    self._leaving.discard(channel)
                    link.send("SSUBSCRIBE", channel)
                else:
                    name = self._channels.get(channel)
                    if name is not None and name in self._links:
                        self._leaving.add(channel)
                        self._links[name].send("SUNSUBSCRIBE", channel)

    async def _open(self, node: ClusterNode) -> _NodeLink:
        link = _NodeLink(node, self._queue)
        await link.open()
        self._links[node.name] = link
        return link

    def _translate(self, link: _NodeLink, reply: list[Any]) -> list[Any] | None:
        kind = reply[0]
        if kind == b"pong":
            # One pong out once every connection has answered this round of pings.
            link.awaiting_pong = False
            if any(other.awaiting_pong for other in self._links.values()):
                return None
            return [b"pong", b""]
        if kind == b"sunsubscribe":
            channel = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
            if channel not in self._leaving:
                # Not asked for: the channel's slot moved to another master.
                raise RedisConnectionError(f"sharded channel {channel!r} moved; resubscribing")
            self._leaving.discard(channel)
            self._channels.pop(channel, None)
        return [_RENAMED.get(kind, kind), *reply[1:]]

    async def read(self) -> list[list[Any]]:
        replies: list[list[Any]] = []
        while not replies:
            if self._broken:
                raise RedisConnectionError("the sharded pub/sub subscriber was aborted")
            await self._flush()
            if self._idle_pong:  # no connection yet: nothing that could be silent
                self._idle_pong = False
                replies.append([b"pong", b""])
                break
            item = await self._queue.get()
            while True:
                if item is not None:
                    link, reply = item
                    if isinstance(reply, BaseException):
                        raise reply
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
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
