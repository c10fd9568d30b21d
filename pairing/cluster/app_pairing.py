"""``AppPairingService`` on a cluster: the limits, the redemption's steps, then the count and
the history entries, each history entry its own step (a crash before those loses them only).
"""

from __future__ import annotations

from pairing import keys
from pairing.cluster.pairing import ClusterPairing, StepHook
from pairing.history import HistoryEvent, NewEntry, PairingHistoryService
from pairing.ratelimit import RateLimitService
from pairing.results import PairOutcome, PairStatus, RedeemResult, RedeemStatus
from pairing.store import Redis


class ClusterAppPairing:
    """``pair`` and ``unpair`` as single-slot steps (``steps`` before each)."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        rate_limit: RateLimitService,
        history: PairingHistoryService,
        heartbeat_timeout_ms: int,
        steps: StepHook | None = None,
    ) -> None:
        self.rate_limit = rate_limit
        self.history = history
        self.pairing = ClusterPairing(
            redis, layout, heartbeat_timeout_ms=heartbeat_timeout_ms, steps=steps
        )

    async def load_scripts(self) -> None:
        await self.pairing.load_scripts()

    async def _record(self, *entries: NewEntry) -> None:
        """One step: the entries of one app, in order, in one call."""
        await self.pairing.step("history")
        await self.history.record_many(list(entries))

    async def pair(self, code: str, app: str, address: str, code_shaped: bool) -> PairOutcome:
        """The limits (one read per subject, at once), then ``ClusterPairing.redeem``, then
        the failure count and the history entries."""
        cluster = self.pairing
        limits = self.rate_limit
        subjects = [limits.key("pair:addr", address), limits.key("pair:app", app)]
        await cluster.step("limits")  # one key per subject, each in its slot: at once
        if await limits.is_limited(*subjects):
            return PairOutcome(PairStatus.RATE_LIMITED)
        if code_shaped:
            redeemed = await cluster.redeem(code, app)
        else:
            redeemed = RedeemResult(RedeemStatus.INVALID_CODE)
        runner = redeemed.runner_id
        if redeemed.status is RedeemStatus.INVALID_CODE:
            await cluster.step("count")
            await limits.hit(*subjects)
            await self._record(NewEntry(HistoryEvent.PAIR_FAILED, app, reason="INVALID_CODE"))
            return PairOutcome(PairStatus.INVALID_CODE)
        if redeemed.status is RedeemStatus.RUNNER_OFFLINE:
            await self._record(NewEntry(HistoryEvent.PAIR_FAILED, app, runner, "RUNNER_OFFLINE"))
            return PairOutcome(PairStatus.RUNNER_OFFLINE, runner)
        previous = redeemed.previous_runner_id
        entries = [NewEntry(HistoryEvent.PAIRED, app, runner)]
        if previous is not None and previous != runner:
            entries.insert(0, NewEntry(HistoryEvent.UNPAIRED, app, previous, "REPAIRED"))
        await self._record(*entries)
        return PairOutcome(PairStatus.PAIRED, runner, previous)

    async def unpair(self, app_session_id: str) -> str | None:
        """The session's delete and the runner's set (``ClusterPairing.unpair``), then the
        history entry."""
        previous_runner = await self.pairing.unpair(app_session_id)
        if previous_runner is not None:
            await self._record(
                NewEntry(HistoryEvent.UNPAIRED, app_session_id, previous_runner, "APP_UNPAIR")
            )
        return previous_runner
