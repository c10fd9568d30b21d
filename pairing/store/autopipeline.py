"""redis-py's asyncio client with its hot commands auto-pipelined over one connection.

Why: redis-py spends about 300 µs of CPU per command on this machine class (pool checkout
and return, a retry wrapper, a timeout context per read, reply parsing through a stream
reader), which made one Redis call cost more than the whole Socket.IO event around it.
ioredis (the Node.js client that socket.io deployments use) instead writes every command
issued in one turn of the event loop as one batch on one connection and parses replies as
they arrive. This client does the same for the commands in ``PIPELINED``: it packs them
itself, flushes once per loop turn, and hands hiredis every chunk read, resolving callers in
order. Everything else (SCRIPT LOAD, pub/sub, transactions, blocking or connection-state
commands) takes redis-py's pooled path unchanged, and the connection itself (TLS, unix
sockets, AUTH, SELECT, Sentinel discovery of the primary) is made by the pool's connection
class.

Failure semantics, which the gateway's UNAVAILABLE acks rely on:
- the connection closing fails every waiting call with ConnectionError at once, and the
  next call connects anew; a call whose connection closed under it is sent once more on a
  new one, as the pooled path's single retry does after a Redis restart;
- no reply for ``socket_timeout`` while calls wait (a frozen server, a dead network)
  fails them with TimeoutError and drops the connection (replies already received when the
  loop was too busy to read them are read first);
- a timed-out call is never sent again: the server may have run it (see ``store.connect``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pairing.store.upstream import (
    EMPTY_RESPONSE,
    NEVER_DECODE,
    parse_reply,
    reader_options,
    streams,
)

#: Commands with one request and one reply that touch no connection state: safe to share
#: one connection between callers. Every command the pairing services send is here.
PIPELINED = frozenset(
    {
        "EVALSHA",
        "GET",
        "MGET",
        "SET",
        "DEL",
        "EXISTS",
        "SMEMBERS",
        "XADD",
        "XREVRANGE",
        "PUBLISH",
        "TIME",
        "PING",
        "ECHO",
        "SCRIPT LOAD",
    }
)


#: Commands that write nothing: with ``Durability``, only the others wait for replicas.
READS = frozenset(
    {"GET", "MGET", "EXISTS", "SMEMBERS", "SISMEMBER", "XREVRANGE", "TIME", "PING", "ECHO"}
    | {"SCRIPT LOAD", "SCRIPT"}
)


@dataclass(frozen=True, slots=True)
class Durability:
    """``redis.wait_replicas``: a write is acknowledged only once ``replicas`` replicas have
    it (WAIT, one per batch of writes), else it fails with ``NotReplicated`` after
    ``timeout_ms``. 0 replicas: off (Redis replication stays asynchronous)."""

    replicas: int = 0
    timeout_ms: int = 500


class NotReplicated(RedisError):
    """The write ran on the master, but not enough replicas confirmed it in time: the caller
    is told UNAVAILABLE (it is not resent: it did run)."""


class ConnectionLost(RedisConnectionError):
    """The connection closed with the request written: whether it ran is unknown."""


def packer(encoder: Any) -> Any:
    """RESP for one command. str (when the encoding is strict UTF-8), bytes and int skip
    redis-py's encoder; everything else goes through it, with its rules and errors."""
    encode = encoder.encode
    utf8 = encoder.encoding.lower().replace("-", "") == "utf8"
    encode_str = str.encode if utf8 and encoder.encoding_errors == "strict" else encode

    def pack(args: tuple[Any, ...]) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        append = parts.append
        for arg in args:
            kind = type(arg)
            if kind is str:
                data = encode_str(arg)
            elif kind is bytes:
                data = arg
            elif kind is int:
                data = b"%d" % arg
            else:
                data = encode(arg)
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
        return b"".join(parts)

    return pack


class Link:
    """One connection, a queue of callers waiting for replies in order, one flush per turn."""

    def __init__(
        self,
        opener: Callable[[], Awaitable[Any]],
        socket_timeout: float | None,
        durability: Durability | None = None,
    ) -> None:
        #: Makes a connected redis-py connection (a pool's kind, or a cluster node's).
        self._opener = opener
        self._durability = durability if durability is not None and durability.replicas else None
        #: The WAIT that ends the current batch, when it holds a write (``durability``).
        self._barrier: asyncio.Future[Any] | None = None
        self._timeout: float | None = float(socket_timeout) if socket_timeout else None
        self._conn: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.Handle | None = None
        #: Loop time of the last reply read, and whether ``_check`` is giving the reader
        #: one more turn before it fails the callers.
        self._read_at = 0.0
        self._confirming = False
        self._sent = 0  # requests written on this connection
        self._replies = 0  # replies read on this connection
        #: (requests written up to and including a flush, the flush's loop time)
        self._flushes: deque[tuple[int, float]] = deque()
        self._pack: Any = None
        self._closers: set[asyncio.Task[None]] = set()

    async def call(self, args: tuple[Any, ...]) -> Any:
        if self._writer is None:
            await self._connect()
        data = self._pack(args)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._out.append(data)
        self._pending.append(fut)
        barrier = self._barrier_for(args, loop)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        reply = await fut
        if barrier is not None:
            await self._replicated(barrier)
        return reply

    def _barrier_for(
        self, args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any] | None:
        """With ``durability``, a write waits for the WAIT that closes its batch."""
        if self._durability is None or args[0] in READS:
            return None
        barrier = self._barrier
        if barrier is None:
            barrier = self._barrier = loop.create_future()
            barrier.add_done_callback(_retrieve)
        return barrier

    async def _replicated(self, barrier: asyncio.Future[Any]) -> None:
        assert self._durability is not None
        try:
            acked = await barrier
        except Exception as exc:
            # The write's reply came, so it ran: never a ConnectionError, which would resend it.
            raise NotReplicated(f"written, but not confirmed replicated: {exc!r}") from exc
        if acked < self._durability.replicas:
            raise NotReplicated(
                f"written, but {acked} of {self._durability.replicas} replicas acknowledged it "
                f"within {self._durability.timeout_ms} ms"
            )

    async def call_asking(self, args: tuple[Any, ...]) -> Any:
        """``ASKING`` then ``args``, adjacent in one write (a cluster's ASK redirection: the
        permission holds for the next command on the connection only)."""
        if self._writer is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        asking: asyncio.Future[Any] = loop.create_future()
        asking.add_done_callback(_retrieve)
        fut: asyncio.Future[Any] = loop.create_future()
        self._out += (self._pack(("ASKING",)), self._pack(args))
        self._pending += (asking, fut)
        barrier = self._barrier_for(args, loop)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        reply = await fut
        if barrier is not None:
            await self._replicated(barrier)
        return reply

    # -- connecting ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Callers arriving while disconnected share one connection attempt.

        A caller that joined an attempt begun before it (during an outage, say) and saw it
        fail makes one attempt of its own: the server may be back by now.
        """
        while self._writer is None:
            task = self._connecting
            if task is not None and task.done():
                # It failed (else the writer would be set), and its callback, which clears
                # it, has not run yet: waiting on it again would spin without yielding.
                task = None
            own = task is None
            if task is None:
                task = self._connecting = asyncio.ensure_future(self._open())
                task.add_done_callback(self._connected)
            try:
                # shielded: a caller that gives up does not cancel the attempt for the others
                await asyncio.shield(task)
            except Exception:
                if own:
                    raise

    def _connected(self, task: asyncio.Task[None]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here; every waiting caller gets it through shield

    async def _open(self) -> None:
        conn = await self._opener()
        self._conn = conn
        self._pack = packer(conn.encoder)
        reader, self._writer = streams(conn)
        parser = hiredis.Reader(**reader_options(conn))
        self._reader_task = asyncio.ensure_future(self._read(reader, parser))

    # -- the two directions -------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self._writer is None:
            return
        if self._barrier is not None:
            assert self._durability is not None
            # WAIT answers once the replicas have every write sent before it on this
            # connection: one per batch covers all of the batch's writes.
            out.append(self._pack(("WAIT", self._durability.replicas, self._durability.timeout_ms)))
            self._pending.append(self._barrier)
            self._barrier = None
        self._out = []
        self._writer.write(out[0] if len(out) == 1 else b"".join(out))
        if self._timeout is not None:
            self._sent += len(out)
            loop = asyncio.get_running_loop()
            now = loop.time()
            self._flushes.append((self._sent, now))
            if self._watchdog is None:
                self._watchdog = loop.call_at(now + self._timeout, self._check)

    async def _read(self, reader: asyncio.StreamReader, parser: Any) -> None:
        pending = self._pending
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionLost("Connection closed by server.")
                parser.feed(data)
                if self._timeout is not None:
                    self._read_at = asyncio.get_running_loop().time()
                demoted = False
                while (reply := parser.gets()) is not False:
                    self._replies += 1
                    fut = pending.popleft()
                    if isinstance(reply, ReadOnlyError):
                        demoted = True
                    if fut.done():
                        continue  # its caller gave up waiting; the reply is dropped
                    if isinstance(reply, Exception):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
                flushes = self._flushes
                while flushes and flushes[0][0] <= self._replies:
                    flushes.popleft()  # answered in full: the watchdog need not keep it
                if demoted:
                    # The server became a replica (a failover): connect again, which asks
                    # the sentinels for the new primary; waiting calls are sent there once.
                    raise ConnectionLost("the server is read-only now (a failover?)")
        except asyncio.CancelledError:
            raise
        except ConnectionLost as exc:
            self._teardown(exc)
        except Exception as exc:
            self._teardown(ConnectionLost(f"Error while reading from Redis: {exc!r}"))

    def _check(self) -> None:
        """Requests have waited a whole socket timeout with no reply read meanwhile: as
        redis-py's per-read timeout would, fail the callers and drop the connection.

        The clock runs from the later of the oldest unanswered request's flush and the last
        reply read: a server answering a long backlog is alive. And before failing, one more
        turn of the loop: after the loop was too busy to run for a while (CPU starvation, a
        burst of work), replies already received are read first, in that turn, rather than
        failing callers whose answers are waiting in the socket.
        """
        self._watchdog = None
        flushes = self._flushes
        while flushes and flushes[0][0] <= self._replies:
            flushes.popleft()  # every request of that flush has its reply
        if not flushes:
            self._confirming = False
            return
        assert self._timeout is not None
        loop = asyncio.get_running_loop()
        due = max(flushes[0][1], self._read_at) + self._timeout
        if loop.time() < due:
            self._confirming = False
            self._watchdog = loop.call_at(due, self._check)
        elif not self._confirming:
            self._confirming = True
            self._watchdog = loop.call_soon(self._check)
        else:
            self._confirming = False
            self._teardown(RedisTimeoutError("Timeout reading from Redis"))

    # -- ending -------------------------------------------------------------------------------

    def _teardown(self, error: Exception) -> None:
        """Fail every waiting caller and drop the connection; the next call reconnects."""
        pending, self._pending = self._pending, deque()
        if self._barrier is not None:
            pending.append(self._barrier)  # (its batch was never written)
            self._barrier = None
        self._out = []
        self._writer = None
        self._sent = self._replies = 0
        self._flushes.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._confirming = False
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            closer = asyncio.ensure_future(conn.disconnect(nowait=True))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)
        for fut in pending:
            if not fut.done():
                fut.set_exception(type(error)(*error.args))

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        self._teardown(RedisConnectionError("The client was closed."))
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A reply nobody awaits: its error, if any, is retrieved (not logged as unhandled)."""
    if not fut.cancelled():
        fut.exception()


async def open_connection(pool: aioredis.ConnectionPool) -> Any:
    """A connected redis-py connection of ``pool``'s kind, outside the pool: it brings TLS,
    unix sockets, AUTH, SELECT and Sentinel's discovery of the primary."""
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.connect()
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    return conn


class AutoPipelineRedis(aioredis.Redis):
    """A ``redis.asyncio.Redis`` whose ``PIPELINED`` commands share one pipelined link."""

    _link: Link | None = None
    #: Set by ``store.connect`` (``redis.wait_replicas``).
    durability: Durability | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        if name not in PIPELINED or NEVER_DECODE in options:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        link = self._link
        if link is None:
            pool = self.connection_pool
            link = self._link = Link(
                lambda: open_connection(pool),
                pool.connection_kwargs.get("socket_timeout"),
                self.durability,
            )
        wire = (*name.split(), *args[1:]) if " " in name else args
        try:
            try:
                response = await link.call(wire)
            except ConnectionLost:
                # Once, as the pooled path retries a connection that died with a restart.
                response = await link.call(wire)
        except ResponseError:
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise
        return await parse_reply(self, name, response, options)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._link is not None:
            await self._link.aclose()
            self._link = None
        await super().aclose(close_connection_pool)
