"""The fan-out's pub/sub connection: subscribe, unsubscribe, ping, and read messages.

Why not redis-py's ``PubSub`` on a real server: its ``get_message`` costs about 120 µs of
CPU per message here (a health check, a retry wrapper and a timeout context per read, then
a dict per message), and every message relayed between replicas passes through it.
``RespSubscriber`` reads the connection itself and hands each chunk to hiredis; the
connection is made by the client's pool (TLS, unix sockets, AUTH, Sentinel), as in
``pairing.store.autopipeline``. ``PubSubSubscriber`` keeps redis-py's ``PubSub`` for clients
without a socket of their own (the embedded memory:// store).

Both speak in replies as Redis sends them in RESP2: ``[b"message", channel, data]``,
``[b"subscribe", channel, count]``, ``[b"pong", b""]``, ...
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse

from pairing.store.autopipeline import AutoPipelineRedis, open_connection, packer
from pairing.store.client import Redis
from pairing.store.upstream import streams


class Subscriber(ABC):
    """One pub/sub connection; the fan-out listener owns it and reads it alone."""

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    def subscribe(self, *channels: str) -> None:
        """Ask for ``channels``; the confirmation arrives later among the replies."""

    @abstractmethod
    def unsubscribe(self, *channels: str) -> None: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    async def read(self) -> list[list[Any]]:
        """The next replies (at least one); raises when the connection is gone."""

    @abstractmethod
    def abort(self) -> None:
        """Break the connection now (a pending ``read`` raises)."""

    @abstractmethod
    async def aclose(self) -> None: ...


def subscriber_for(client: Redis) -> Subscriber:
    """The subscriber for ``client``: sharded channels on a cluster, else classic pub/sub."""
    if isinstance(client, RedisCluster):
        from pairing.store.sharded import ShardedSubscriber  # (it imports this module)

        return ShardedSubscriber(client)
    if isinstance(client, AutoPipelineRedis):
        return RespSubscriber(client)
    return PubSubSubscriber(client)


class RespSubscriber(Subscriber):
    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pack: Any = None
        self._parser = hiredis.Reader(protocolError=InvalidResponse, replyError=Exception)

    async def connect(self) -> None:
        conn = await open_connection(self._pool)
        self._conn = conn
        self._pack = packer(conn.encoder)
        self._reader, self._writer = streams(conn)

    def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        self._writer.write(data)

    def subscribe(self, *channels: str) -> None:
        if channels:
            self._send(self._pack(("SUBSCRIBE", *channels)))

    def unsubscribe(self, *channels: str) -> None:
        if channels:
            self._send(self._pack(("UNSUBSCRIBE", *channels)))

    def ping(self) -> None:
        self._send(self._pack(("PING",)))

    async def read(self) -> list[list[Any]]:
        if self._reader is None:
            raise RedisConnectionError("the pub/sub connection is closed")
        parser = self._parser
        replies: list[list[Any]] = []
        while not replies:
            data = await self._reader.read(65536)
            if not data:
                raise RedisConnectionError("the pub/sub connection was closed by the server")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if isinstance(reply, Exception):
                    raise RedisConnectionError(f"pub/sub error reply: {reply}")
                replies.append(reply)
        return replies

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        self._reader = self._writer = None
        if conn is not None:
            await conn.disconnect(nowait=True)


class PubSubSubscriber(Subscriber):
    """redis-py's PubSub, for clients whose connections are not sockets (fakeredis).

    Commands are queued and sent by ``read``, the only task that touches the PubSub.
    """

    def __init__(self, client: Redis) -> None:
        self._pubsub: Any = client.pubsub()
        self._requests: list[tuple[str, tuple[str, ...]]] = []
        self._broken = False

    async def connect(self) -> None:
        """Nothing to do: redis-py connects with the first subscription."""

    def subscribe(self, *channels: str) -> None:
        if channels:
            self._requests.append(("subscribe", channels))

    def unsubscribe(self, *channels: str) -> None:
        if channels:
            self._requests.append(("unsubscribe", channels))

    def ping(self) -> None:
        self._requests.append(("ping", ()))

    async def read(self) -> list[list[Any]]:
        while True:
            if self._broken:
                raise RedisConnectionError("the pub/sub connection was aborted")
            requests, self._requests = self._requests, []
            for command, channels in requests:
                await getattr(self._pubsub, command)(*channels)
            message = await self._pubsub.get_message(timeout=0.2)
            if message is not None:
                return [[_bytes(message["type"]), message["channel"], message["data"]]]

    def abort(self) -> None:
        self._broken = True

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()


def _bytes(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value
