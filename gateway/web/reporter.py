"""Each replica's report for the operator console, written every ``console.report_interval_s``.

It says whether this replica reaches its store and its cross-replica listener and how many
apps and runners it holds; and it keeps this replica's hash of since when each runner is
connected here (as first seen by a report, so within one interval), written by difference:
only the runners that came or went since the last report. Runs only while the console is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from pairing.overview import OperatorOverview, ReplicaReport
from pairing.store import Redis, ping

log = logging.getLogger("gateway.console")

#: (connected apps, runnerIds registered on this replica)
LocalCounts = Callable[[], tuple[int, list[str]]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReplicaReporter:
    def __init__(
        self,
        overview: OperatorOverview,
        store: Redis,
        *,
        replica_id: str,
        interval_s: float,
        local: LocalCounts,
        fanout_healthy: Callable[[], bool],
        store_timeout_s: float,
    ) -> None:
        self.overview = overview
        self.store = store
        self.replica_id = replica_id
        self.interval_s = interval_s
        self.local = local
        self.fanout_healthy = fanout_healthy
        self.store_timeout_s = store_timeout_s
        self.started_at = _now_ms()
        #: runnerId -> when a report first saw it here.
        self.since: dict[str, int] = {}
        #: The runners this replica's hash holds (as of the last report that reached it).
        self.written: set[str] = set()
        #: The hash outlives a few missed reports, not a stopped replica.
        self.ttl_ms = int(max(3 * interval_s, 30.0) * 1000)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="replica-reporter")

    async def stop(self) -> None:
        """The loop ends at its next turn (an event as well as cancel: a cancel that lands
        inside a store call may not get through, and the loop must still end)."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def build(self, store_ok: bool, runners: int, apps: int) -> ReplicaReport:
        return ReplicaReport(
            replica_id=self.replica_id,
            started_at=self.started_at,
            reported_at=_now_ms(),
            apps=apps,
            runners=runners,
            store=store_ok,
            fanout=self.fanout_healthy(),
        )

    async def report_once(self) -> None:
        apps, runners = self.local()
        now = _now_ms()
        current = {r: self.since.get(r, now) for r in runners}
        came = {r: at for r, at in current.items() if r not in self.written}
        went = [r for r in self.written if r not in current]
        self.since = current
        async with asyncio.timeout(self.store_timeout_s):
            store_ok = await ping(self.store)
            await self.overview.report(self.build(store_ok, len(current), apps))
            kept = await self.overview.report_runners(
                self.replica_id, came=came, went=went, ttl_ms=self.ttl_ms
            )
        # What the hash holds now; all of it again next time if it had expired meanwhile.
        self.written = set(current) if kept else set()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.report_once()
            except Exception as exc:  # the store is down: the report shows it by going stale
                log.debug("replica report not written", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()
