"""Finds runners whose replica died (no disconnect handler ran) and unpairs them.

Every replica runs one; a short lock in Redis lets one sweep at a time. The sweep itself is
one atomic script, so two sweeps overlapping after a lock expiry cannot double-notify.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.metrics import Metrics
from gateway.tasks import cancel_and_wait
from pairing import RunnerRegistry, StaleRunner, keys
from pairing.store import Redis, ping

log = logging.getLogger("gateway.sweeper")


class Sweeper:
    def __init__(
        self,
        redis: Redis,
        runners: RunnerRegistry,
        *,
        replica_id: str,
        interval_s: float,
        on_stale: Callable[[list[StaleRunner]], Awaitable[None]],
        metrics: Metrics,
        store_timeout_s: float = 3.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.runners = runners
        self.replica_id = replica_id
        self.interval_s = interval_s
        self.on_stale = on_stale
        self.metrics = metrics
        self.store_timeout_s = store_timeout_s
        self._task: asyncio.Task[None] | None = None
        #: After a store failure, no sweeping until one heartbeat timeout after the store
        #: answers again: heartbeats sent meanwhile were lost, not missing (monotonic time).
        self._store_failed = False
        self._hold_until = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def sweep_once(self) -> list[StaleRunner]:
        """One round: take the lock if free, then sweep. Returns what was found."""
        lock_ms = max(int(self.interval_s * 1000), 100)
        async with asyncio.timeout(self.store_timeout_s):
            got = await self.redis.set(
                self.layout.sweeper_lock(), self.replica_id, nx=True, px=lock_ms
            )
        if not got:
            self.metrics.sweeper_actions.labels("skipped_locked").inc()
            return []
        found: list[StaleRunner] = []
        while True:
            async with asyncio.timeout(self.store_timeout_s):
                batch = await self.runners.sweep(limit=100)
            if not batch:
                break
            found.extend(batch)
            self.metrics.sweeper_actions.labels("runner_offline").inc(len(batch))
            await self.on_stale(batch)
            if len(batch) < 100:
                break
        self.metrics.sweeper_actions.labels("swept").inc()
        return found

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if self._store_failed:
                    async with asyncio.timeout(self.store_timeout_s):
                        await ping(self.redis)  # on a cluster: every master
                    self._store_failed = False
                    hold_s = self.runners.heartbeat_timeout_ms / 1000
                    self._hold_until = time.monotonic() + hold_s
                if time.monotonic() < self._hold_until:
                    continue
                stale = await self.sweep_once()
                if stale:
                    log.info(
                        "swept stale runners",
                        extra={"runners": [s.runner_id for s in stale]},
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.sweeper_actions.labels("error").inc()
                self.metrics.redis_errors.labels("sweeper").inc()
                log.warning("sweep failed", extra={"error": repr(exc)})
                self._store_failed = True
