"""Leaner per-connection objects for python-engineio, for memory per idle connection.

python-engineio gives every connection an ``asyncio.Queue`` for outgoing packets: five
deques and an Event, about 3.7 KiB, most of an idle runner's Python-level footprint beside
aiohttp's own. ``LeanQueue`` is the subset of that interface engineio uses (one consumer,
the connection's writer), holding a deque only while packets wait. ``LeanSocket`` waits
for its next ping with a timer, and for its next outgoing packet without an extra task.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import engineio
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket


class LeanQueue:
    __slots__ = ("_getters", "_items", "_joiners", "_unfinished")

    def __init__(self, *_: Any, **__: Any) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._unfinished += 1
        getters = self._getters
        if getters:
            self._getters = None
            for fut in getters:
                if not fut.done():
                    fut.set_result(None)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._take(self._items)

    def _take(self, items: deque[Any]) -> Any:
        item = items.popleft()
        if not items:
            self._items = None  # an idle connection holds no deque
        return item

    async def get(self) -> Any:
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(fut)
            try:
                await fut
            finally:
                if self._getters is not None and fut in self._getters:
                    self._getters.remove(fut)
        return self._take(self._items)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for fut in joiners:
                if not fut.done():
                    fut.set_result(None)

    async def join(self) -> None:
        while self._unfinished > 0:
            fut = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(fut)
            await fut


class LeanSocket(AsyncSocket):  # type: ignore[misc]
    """An engineio socket whose ping cycle is a timer handle, not a task and a coroutine."""

    last_ping: float | None

    async def poll(self) -> list[Any]:
        """engineio's poll without ``wait_for``, which costs a task per wait (and per idle
        connection, since the writer always waits here)."""
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await self.queue.get()
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    def schedule_ping(self) -> None:
        if self.last_ping:  # only after the previous ping was answered, as engineio does
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping_due)

    def _ping_due(self) -> None:
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        self.queue.put_nowait(packet.Packet(packet.PING))


class _SocketTable(dict[str, Any]):
    """engineio's sid -> socket dict, handing every new socket the lean class."""

    def __setitem__(self, sid: str, socket: Any) -> None:
        if type(socket) is AsyncSocket:
            socket.__class__ = LeanSocket
        super().__setitem__(sid, socket)


class LeanEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sockets = _SocketTable()

    def create_queue(self, *args: Any, **kwargs: Any) -> LeanQueue:
        return LeanQueue()
