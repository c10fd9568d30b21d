"""A leaner ``asyncio.Queue`` for python-engineio's per-connection outgoing packets.

python-engineio gives every connection an ``asyncio.Queue``: five deques and an Event, about
3.7 KiB, most of an idle runner's Python-level footprint beside aiohttp's own. ``LeanQueue``
is the subset of that interface engineio uses (one consumer, the connection's writer),
holding a deque only while packets wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


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
