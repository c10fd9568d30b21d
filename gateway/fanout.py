"""Cross-replica delivery: one pub/sub channel per room, local delivery without Redis.

Why not python-socketio's AsyncRedisManager: it publishes every emit, even one whose target
is on this replica, on one channel that every replica reads and decodes, so relay traffic
costs a Redis round trip per message and every replica's CPU for every message in the
cluster. Here (like Node's sharded redis-adapter) a replica subscribes only to the channels
of rooms it holds; an emit whose room has members here is delivered locally, and only an
emit for a room held elsewhere is published. See docs/architecture.md.

Rooms are ``app:{appSessionId}`` and ``runner:{runnerId}``; the newest connection of an
app or runner evicts older ones anywhere (``evict``), so a room lives on one replica.

On a Redis Cluster (``keys.ClusterKeyLayout``) the channels are sharded (SPUBLISH and
SSUBSCRIBE, ``pairing.store.sharded``): a message goes to the one master owning its room's
channel and reaches only the replica subscribed there, the one holding the room. A plain
PUBLISH there would be broadcast to every node of the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.tasks import cancel_and_wait
from pairing import envelope as envelope_codec
from pairing import keys
from pairing.envelope import Envelope
from pairing.store import Redis
from pairing.store.subscriber import Subscriber, subscriber_for

log = logging.getLogger("gateway.fanout")

#: Sends ``event`` with ``data`` to one local socket.
LocalEmit = Callable[[str, str, Any], Awaitable[None]]
#: Disconnects the local socket ``sid`` (an older connection that was taken over).
LocalDisconnect = Callable[[str], Awaitable[None]]
#: The local socket ``sid``'s room was held by another replica until now (``moved``).
LocalMoved = Callable[[str], Awaitable[None]]


_encode = envelope_codec.encode
_decode = envelope_codec.decode

_PING_EVERY_S = 5.0
_PONG_DEADLINE_S = 10.0


def room_for_app(app_session_id: str) -> str:
    return f"app:{app_session_id}"


def room_for_runner(runner_id: str) -> str:
    return f"runner:{runner_id}"


class Fanout:
    """Room membership on this replica and delivery to rooms wherever they are."""

    def __init__(
        self,
        redis: Redis,
        listen_redis: Redis,
        *,
        replica_id: str,
        local_emit: LocalEmit,
        local_disconnect: LocalDisconnect,
        on_listener_error: Callable[[], None] | None = None,
        local_moved: LocalMoved | None = None,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        #: Channel names, and on a cluster sharded pub/sub (SPUBLISH): a room's channel lives
        #: in one slot, so a message goes to the one master owning it, not to every node.
        self.layout = layout
        self.listen_redis = listen_redis
        self.replica_id = replica_id
        self._local_emit = local_emit
        self._local_disconnect = local_disconnect
        self._on_listener_error = on_listener_error
        self._local_moved = local_moved
        #: room -> its socket here (a str: the usual case, and the cheapest), or a set of
        #: them while an older socket is still being evicted.
        self.members: dict[str, str | set[str]] = {}
        self._sub: Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        #: channel -> futures waiting for Redis to confirm our subscription to it.
        self._sub_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self.published = 0
        self.delivered_locally = 0

    # -- membership ---------------------------------------------------------------------

    def is_local(self, room: str) -> bool:
        return room in self.members

    def local_members(self, room: str) -> set[str]:
        held = self.members.get(room)
        if held is None:
            return set()
        return {held} if isinstance(held, str) else set(held)

    async def join(
        self, sid: str, room: str, *, confirm: bool = False
    ) -> asyncio.Future[None] | None:
        """Add ``sid`` to ``room``. With ``confirm``, returns a future that is done once Redis
        confirmed the room's subscription (None when already subscribed or not possible):
        from then on, whatever is published to the room reaches this replica."""
        held = self.members.get(room)
        if held is None:
            self.members[room] = sid
            channel = self.layout.room_channel(room)
            waiter = None
            if confirm and self._sub is not None:
                waiter = asyncio.get_running_loop().create_future()
                self._sub_waiters.setdefault(channel.encode(), []).append(waiter)
            await self._subscribe(channel)
            return waiter
        elif isinstance(held, str):
            if held != sid:
                self.members[room] = {held, sid}
        else:
            held.add(sid)
        return None

    async def leave(self, sid: str, room: str) -> None:
        held = self.members.get(room)
        if held is None:
            return
        if isinstance(held, str):
            if held != sid:
                return
        else:
            held.discard(sid)
            if len(held) == 1:
                self.members[room] = next(iter(held))
            if held:
                return
        del self.members[room]
        await self._unsubscribe(self.layout.room_channel(room))

    # -- delivery -----------------------------------------------------------------------

    async def emit(self, room: str, event: str, data: Any) -> None:
        """Deliver to ``room``: locally when it is here, else through its channel."""
        if self.is_local(room):
            self.delivered_locally += 1
            await self._emit_here(room, event, data)
            return
        envelope = Envelope("emit", room, self.replica_id, event, data)
        await self._publish(room, _encode(envelope))
        self.published += 1

    def channel(self, room: str) -> str:
        return self.layout.room_channel(room)

    async def _publish(self, room: str, message: bytes) -> None:
        if self.layout.cluster:
            await self.redis.spublish(self.layout.room_channel(room), message)
        else:
            await self.redis.publish(self.layout.room_channel(room), message)

    def envelope_prefix(self, room: str, event: str) -> bytes:
        """An emit Envelope up to its ``data``: a relay script appends data, keep and seq
        (``pairing.envelope``)."""
        return envelope_codec.emit_prefix(room, self.replica_id, event)

    async def deliver_here(self, room: str, event: str, data: Any) -> None:
        """Deliver to the room's sockets on this replica (nothing if it has none now)."""
        await self._emit_here(room, event, data)

    async def _emit_here(self, room: str, event: str, data: Any) -> None:
        held = self.members.get(room)
        if isinstance(held, str):
            await self._local_emit(held, event, data)
        elif held:
            for sid in list(held):
                await self._local_emit(sid, event, data)

    async def evict(self, room: str, keep_sid: str) -> None:
        """Disconnect every member of ``room`` but ``keep_sid``, here and on other replicas."""
        for sid in self.local_members(room) - {keep_sid}:
            await self._local_disconnect(sid)
        envelope = Envelope("evict", room, self.replica_id, keep=keep_sid)
        await self._publish(room, _encode(envelope))

    async def _handle(self, raw: bytes) -> None:
        try:
            envelope = _decode(raw)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable fan-out message")
            return
        if envelope.kind == "emit":
            # Also our own: an emit is published only for a room that was elsewhere when it
            # was sent, and that has come here since.
            data = envelope.data
            if envelope.seq and isinstance(data, dict):
                data["seq"] = envelope.seq
            try:
                await self._emit_here(envelope.room, envelope.event, data)
            except Exception as exc:
                # One message that cannot be sent (e.g. data nested too deeply for
                # python-socketio to encode) must not take down the listener, and with it
                # every room's messages until it has resubscribed.
                log.warning(
                    "dropped a fan-out message that could not be delivered",
                    extra={"room": envelope.room, "error": repr(exc)[:200]},
                )
        elif envelope.kind == "evict" and envelope.origin != self.replica_id:
            # (our own evict was applied locally.) The socket kept is on the origin replica,
            # so every member here is older, even one with the same sid: a connection
            # restored there by Socket.IO's connection state recovery keeps its sid.
            await self._evicted(envelope.room, self.local_members(envelope.room))
        elif envelope.kind == "moved" and envelope.origin != self.replica_id:
            for sid in self.local_members(envelope.room):
                if self._local_moved is not None:
                    await self._local_moved(sid)

    async def _evicted(self, room: str, sids: set[str]) -> None:
        """Another replica's newer socket took ``room``: the older ones here leave it.

        Until now this replica delivered the room's messages here, unpublished, and the newer
        socket's replica may have read the hold (a resume) before some of them were relayed.
        So once they have left (from here on, messages for the room are published), a
        ``moved`` notice goes to the room: every relay this replica sent before is in Redis
        ahead of it (one connection, in order), and the newer socket reads the hold again.
        """
        if not sids:
            return
        for sid in sids:
            await self.leave(sid, room)
        envelope = Envelope("moved", room, self.replica_id)
        try:
            await self._publish(room, _encode(envelope))
        except Exception as exc:
            log.warning("could not announce a moved room", extra={"error": repr(exc)[:200]})
        for sid in sids:
            await self._local_disconnect(sid)

    def _confirm(self, channel: Any) -> None:
        name = channel.encode() if isinstance(channel, str) else bytes(channel)
        for waiter in self._sub_waiters.pop(name, []):
            if not waiter.done():
                waiter.set_result(None)

    def _drop_waiters(self) -> None:
        """The connection is gone: nobody's subscription will be confirmed on it."""
        waiters, self._sub_waiters = self._sub_waiters, {}
        for futures in waiters.values():
            for waiter in futures:
                if not waiter.done():
                    waiter.set_result(None)

    # -- the listener -------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fanout-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _subscribe(self, channel: str) -> None:
        sub = self._sub
        if sub is None:
            return  # the listener subscribes to every current room when it reconnects
        try:
            sub.subscribe(channel)
        except Exception:  # the listener notices the broken connection and resubscribes
            log.debug("subscribe to %s failed; the listener will retry", channel)

    async def _unsubscribe(self, channel: str) -> None:
        sub = self._sub
        if sub is None:
            return
        try:
            sub.unsubscribe(channel)
        except Exception:
            log.debug("unsubscribe from %s failed", channel)

    async def _run(self) -> None:
        """Listen forever; after any error, reconnect and resubscribe (never die silently)."""
        backoff = 0.05
        while True:
            sub = subscriber_for(self.listen_redis)
            try:
                await sub.connect()
                # From here to self._sub no await: a room joined meanwhile is in members.
                # A replica-wide channel keeps the connection subscribed even with no rooms.
                channels = [self.layout.room_channel(f"replica:{self.replica_id}")]
                channels += [self.layout.room_channel(room) for room in list(self.members)]
                sub.subscribe(*channels)
                self._sub = sub
                self._connected.set()
                if backoff > 0.05:
                    log.info("fan-out listener reconnected", extra={"rooms": len(self.members)})
                backoff = 0.05
                await self._listen(sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._connected.clear()
                if self._on_listener_error is not None:
                    self._on_listener_error()
                log.warning(
                    "fan-out listener lost Redis; reconnecting in %.2fs",
                    backoff,
                    extra={"error": repr(exc)},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._connected.clear()
                self._sub = None
                self._drop_waiters()
                with contextlib.suppress(Exception):
                    await sub.aclose()

    async def _listen(self, sub: Subscriber) -> None:
        """Hand on messages in order; a ping every 5 s, and no pong for 10 s breaks it."""
        loop = asyncio.get_running_loop()
        last_pong = loop.time()
        timer: asyncio.TimerHandle | None = None

        def keepalive() -> None:
            nonlocal timer
            if loop.time() - last_pong > _PONG_DEADLINE_S:
                log.warning("no pong on the pub/sub connection")
                sub.abort()  # the pending read raises, and _run reconnects
                return
            with contextlib.suppress(Exception):
                sub.ping()
            timer = loop.call_later(_PING_EVERY_S, keepalive)

        keepalive()
        try:
            while True:
                for reply in await sub.read():
                    kind = reply[0]
                    if kind == b"message":
                        await self._handle(reply[2])
                    elif kind in {b"pong", b"subscribe", b"unsubscribe"}:
                        last_pong = loop.time()
                        if kind == b"subscribe" and self._sub_waiters:
                            self._confirm(reply[1])
        finally:
            if timer is not None:
                timer.cancel()
