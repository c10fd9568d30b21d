"""One deadline length for many tasks, kept by one timer instead of one per task.

``asyncio.timeout`` per client event schedules a timer handle, pushes it on the loop's heap
and cancels it again, for an event that almost always finishes well within its bound (a
tenth of the heartbeat path's CPU). Here tasks are grouped by when they started, in
buckets ``tick`` seconds wide; one timer per bucket (while any exist) cancels the tasks of a
bucket still running ``seconds`` after it opened. A task is thus cancelled between
``seconds`` and ``seconds + tick`` after it entered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Deadlines:
    """Bounds the time between ``enter`` and ``leave`` of a task."""

    def __init__(self, seconds: float, *, tick: float = 0.25) -> None:
        self.seconds = seconds
        self.tick = tick
        #: (when the bucket's tasks are due, the tasks still running), oldest first.
        self._buckets: deque[tuple[float, set[asyncio.Task[Any]]]] = deque()
        self._open: set[asyncio.Task[Any]] | None = None
        self._open_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        #: Tasks this cancelled, until they have seen it (``expired``).
        self._expired: set[asyncio.Task[Any]] = set()

    def enter(self, task: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
        """Start ``task``'s deadline (the current task); pass what this returns to ``leave``."""
        loop = task.get_loop()
        bucket = self._open
        now = loop.time()
        if bucket is None or now >= self._open_until:
            bucket = self._open = set()
            self._open_until = now + self.tick
            self._buckets.append((self._open_until + self.seconds, bucket))
            if self._timer is None:
                self._timer = loop.call_at(self._buckets[0][0], self._fire, loop)
        bucket.add(task)
        return bucket

    def leave(self, bucket: set[asyncio.Task[Any]], task: asyncio.Task[Any]) -> bool:
        """End ``task``'s deadline: True if it had expired (and cancelled the task).

        The cancellation is then taken back, as ``asyncio.timeout`` does when it converts it
        into a TimeoutError; False with the task still cancelling means it is being
        cancelled from outside too.
        """
        bucket.discard(task)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        buckets = self._buckets
        now = loop.time()
        while buckets and buckets[0][0] <= now:
            _, bucket = buckets.popleft()
            if bucket is self._open:
                self._open = None
            for task in bucket:
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
            bucket.clear()
        if buckets:
            self._timer = loop.call_at(buckets[0][0], self._fire, loop)
