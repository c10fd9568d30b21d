"""The connection to the gateway: a reconnect loop with backoff, and an outbox that keeps what
was sent until the gateway acked it.

With ``resend`` (end-to-end encrypted records, which the receiver deduplicates by counter) an
event whose ack never came, because the connection died first, is emitted again on the next
connection, in order, before anything newer: nothing typed is lost when a replica dies. Without
it (plain data, where a resend would be a second message) an event is emitted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import socketio

Ack = dict[str, Any]
Handler = Callable[..., Awaitable[None]]
#: Refusals worth another try later: the store was slow, or the runner was between connections.
RETRYABLE = frozenset({"UNAVAILABLE", "RUNNER_OFFLINE"})
#: Longest wait for a connection's close when it ends (a dead link never answers).
CLOSE_TIMEOUT_S = 2.0


def say(*parts: Any) -> None:
    print(*parts, flush=True)


@dataclass(eq=False)
class _Entry:
    event: str
    payload: dict[str, Any]


class Outbox:
    """Events to emit in order on whatever connection is up, without waiting for each ack."""

    def __init__(
        self,
        *,
        resend: bool,
        on_refused: Callable[[str, Ack], None],
        max_pending: int = 256,
        retry_s: float = 0.5,
    ) -> None:
        self.resend = resend
        self.on_refused = on_refused
        self.max_pending = max_pending
        self.retry_s = retry_s
        self._entries: list[_Entry] = []
        self._next = 0
        self._sio: socketio.AsyncClient | None = None
        self._generation = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        #: Events emitted again on a later connection (their ack never came).
        self.resent = 0
        self._emitted: set[int] = set()

    @property
    def pending(self) -> int:
        """Events not yet acked (with resend) or not yet emitted (without)."""
        return len(self._entries)

    def put(self, event: str, payload: dict[str, Any]) -> None:
        self._entries.append(_Entry(event, payload))
        self._wake.set()

    async def send(self, event: str, payload: dict[str, Any]) -> None:
        """put(), once fewer than max_pending wait: a fast producer waits for the gateway."""
        async with self._room:
            await self._room.wait_for(lambda: len(self._entries) < self.max_pending)
        self.put(event, payload)

    async def room(self) -> None:
        """Until fewer than max_pending wait (a fast producer waits for the gateway)."""
        async with self._room:
            await self._room.wait_for(lambda: len(self._entries) < self.max_pending)

    async def drained(self) -> None:
        async with self._room:
            await self._room.wait_for(lambda: not self._entries)

    def attach(self, sio: socketio.AsyncClient) -> None:
        """A connection is up (and registered): emit everything unacked on it, oldest first."""
        self._generation += 1
        self._sio = sio
        self._next = 0
        self._wake.set()

    def detach(self) -> None:
        self._sio = None

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._sio is not None and self._next < len(self._entries):
                sio, generation = self._sio, self._generation
                entry = self._entries[self._next]
                self._next += 1
                if id(entry) in self._emitted:
                    self.resent += 1
                self._emitted.add(id(entry))
                try:
                    await sio.emit(
                        entry.event,
                        entry.payload,
                        callback=lambda *ack, e=entry, g=generation: self._acked(e, g, ack),
                    )
                except socketio.exceptions.SocketIOError:
                    if self._sio is sio:
                        self._sio = None
                    break
                if not self.resend:
                    self._remove(entry)

    def _acked(self, entry: _Entry, generation: int, args: tuple[Any, ...]) -> None:
        ack = args[0] if args and isinstance(args[0], dict) else {}
        if ack.get("success"):
            self._remove(entry)
            return
        if self.resend and ack.get("error") in RETRYABLE and generation == self._generation:
            # Emit it (and what followed it: the receiver drops what it has) again shortly.
            asyncio.get_running_loop().call_later(self.retry_s, self._rewind, entry, generation)
            return
        self._remove(entry)
        self.on_refused(entry.event, ack)

    def _rewind(self, entry: _Entry, generation: int) -> None:
        if generation != self._generation or entry not in self._entries:
            return
        self._next = min(self._next, self._entries.index(entry))
        self._wake.set()

    def _remove(self, entry: _Entry) -> None:
        try:
            index = self._entries.index(entry)
        except ValueError:
            return
        del self._entries[index]
        self._emitted.discard(id(entry))
        if index < self._next:
            self._next -= 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()


class Connection:
    """Connects, runs ``on_up`` (register, pair, resume) on each new connection, and
    reconnects with jittered exponential backoff until stopped.

    ``on_up`` returns False when the connection cannot be used (a refusal it reported): the
    loop waits and tries again, or stops if ``stop_on_refusal``.
    """

    def __init__(
        self,
        url: str,
        *,
        handlers: dict[str, Handler],
        on_up: Callable[[socketio.AsyncClient], Awaitable[bool]],
        auth: Callable[[], dict[str, Any] | None] | None = None,
        outbox: Outbox | None = None,
        ack_timeout: float = 10.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        on_line: Callable[[str], None] = say,
    ) -> None:
        self.url = url
        self.handlers = handlers
        self.on_up = on_up
        self.auth = auth
        self.outbox = outbox
        self.ack_timeout = ack_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.on_line = on_line
        self.sio: socketio.AsyncClient | None = None
        self.up = asyncio.Event()
        self._gone = asyncio.Event()

    async def call(self, event: str, data: Any = None) -> Ack:
        """Emit with an ack on the current connection and wait for it (TimeoutError if the
        connection dies meanwhile: the caller decides whether to try again)."""
        await self.up.wait()
        sio = self.sio
        assert sio is not None
        ack = await sio.call(event, data, timeout=self.ack_timeout)
        return ack if isinstance(ack, dict) else {}

    def drop(self, sio: socketio.AsyncClient) -> None:
        """Give up on ``sio`` if it is still the current connection (an ack that never came
        on it): reconnect."""
        if self.sio is sio:
            self._gone.set()

    async def run(self, *, once: bool = False) -> bool:
        """The reconnect loop; with ``once``, one connection only (True if it was up)."""
        delay = self.min_backoff
        while True:
            was_up = await self._session()
            if once:
                return was_up
            if was_up:
                delay = self.min_backoff
            wait = delay * random.uniform(0.5, 1.0)
            self.on_line(f"disconnected; reconnecting in {wait:.1f} s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_backoff)

    async def _session(self) -> bool:
        async with aiohttp.ClientSession() as http:
            sio = socketio.AsyncClient(reconnection=False, http_session=http)
            self._gone = asyncio.Event()
            gone = self._gone

            async def disconnect(reason: Any = None) -> None:
                self.on_line(f"connection lost: {reason}")
                gone.set()

            sio.on("disconnect", disconnect)
            for event, handler in self.handlers.items():
                sio.on(event, _message_only(handler))
            auth = self.auth() if self.auth is not None else None
            try:
                await sio.connect(
                    self.url, auth=auth, transports=["websocket"], wait_timeout=self.ack_timeout
                )
            except socketio.exceptions.ConnectionError as exc:
                self.on_line(f"cannot connect to {self.url}: {exc}")
                await sio.shutdown()
                return False
            self.sio = sio
            try:
                self.up.set()
                try:
                    usable = await self.on_up(sio)
                except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
                    self.on_line(f"connection failed: {exc!r}")
                    return False
                if not usable:
                    return False
                if self.outbox is not None:
                    self.outbox.attach(sio)
                await gone.wait()
                return True
            finally:
                self.up.clear()
                self.sio = None
                if self.outbox is not None:
                    self.outbox.detach()
                # Bounded: on a dead (frozen) link the close handshake would wait long.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sio.disconnect(), CLOSE_TIMEOUT_S)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sio.shutdown(), CLOSE_TIMEOUT_S)


def _message_only(handler: Handler) -> Handler:
    """``handler`` called with the event's message alone: with the gateway's
    ``socketio.connection_state_recovery`` on, every event carries its offset as one more
    argument, which these clients (resuming with ``lastSeq``) do not use."""

    async def call(msg: Any = None, *_offset: Any) -> None:
        await handler(msg)

    return call
