"""Each replica's report for the operator console, written every ``console.report_interval_s``.

It says whether this replica reaches its store and its cross-replica listener, how many apps
and runners it holds, and since when each runner is connected here (as first seen by a
report, so within one interval). Runs only while the console is on.
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
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="replica-reporter")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def build(self, store_ok: bool) -> ReplicaReport:
        apps, runners = self.local()
        now = _now_ms()
        self.since = {r: self.since.get(r, now) for r in runners}
        return ReplicaReport(
            replica_id=self.replica_id,
            started_at=self.started_at,
            reported_at=now,
            apps=apps,
            runners=len(runners),
            store=store_ok,
            fanout=self.fanout_healthy(),
            runner_since=dict(self.since),
        )

    async def report_once(self) -> None:
        async with asyncio.timeout(self.store_timeout_s):
            store_ok = await ping(self.store)
            await self.overview.report(self.build(store_ok))

    async def _run(self) -> None:
        while True:
            try:
                await self.report_once()
            except Exception as exc:  # the store is down: the report shows it by going stale
                log.debug("replica report not written", extra={"error": repr(exc)})
            await asyncio.sleep(self.interval_s)
