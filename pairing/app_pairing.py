"""AppPairingService: an app's pair and unpair, each with its checks and history, in one script.

``app:pair`` needs the failure rate limit, the code's redemption (runner online, code spent,
the app moved off its previous runner) and the history entries of whatever happened; done
in one Lua script, it is one round trip, a failed attempt's count and its history entry
cannot be split by a failure between them, and two replicas cannot both let one more attempt
through at the limit. ``app:unpair`` and its history entry likewise.

Keys the scripts derive from what they read (the runner's heartbeat, code and apps set) are
not in KEYS: they are not known before the script runs; every key known up front is. On a
Redis Cluster (``layout.cluster``), where those keys sit in other slots, both run as
single-slot steps instead (``pairing.cluster_pairing``), each history entry its own step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.cluster_pairing import ClusterPairing, StepHook
from pairing.codes import PairingCodeService
from pairing.history import RECORD_LUA, HistoryEvent, NewEntry, PairingHistoryService
from pairing.ratelimit import RateLimitService
from pairing.scripts import DERIVED_KEYS, MOVE_APP, NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: KEYS: rate-limit key per address, per app; code key (a placeholder when the code is not
#: code-shaped: then it is not looked up); session key; history stream.
#: ARGV: limit, window ms, '1' if code-shaped, CODE, app, heartbeat timeout ms, history max len.
#: Returns {'limited'} | {'invalid'} | {'offline', runner} | {'ok', runner, previous}.
_PAIR = (
    NOW_MS
    + DERIVED_KEYS
    + """
local history_key, history_max = KEYS[5], ARGV[7]
"""
    + RECORD_LUA
    + """
local limit = tonumber(ARGV[1])
for i = 1, 2 do
  local count = tonumber(redis.call('GET', KEYS[i]))
  if count and count >= limit then return {'limited'} end
end
local app = ARGV[5]
local runner = false
if ARGV[3] == '1' then runner = redis.call('GET', KEYS[3]) end
if not runner then
  for i = 1, 2 do
    if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
  record('event', 'pair_failed', 'appSessionId', app, 'reason', 'INVALID_CODE')
  return {'invalid'}
end
local hb = tonumber(redis.call('GET', heartbeat_key_of(runner)))
if not hb or now - hb > tonumber(ARGV[6]) then
  record('event', 'pair_failed', 'appSessionId', app, 'runnerId', runner,
    'reason', 'RUNNER_OFFLINE')
  return {'offline', runner}
end
redis.call('DEL', KEYS[3])
local rc = runner_code_key_of(runner)
if redis.call('GET', rc) == ARGV[4] then redis.call('DEL', rc) end
local session_key, apps_key = KEYS[4], apps_key_of(runner)
"""
    + MOVE_APP
    + """
if previous ~= '' and previous ~= runner then
  record('event', 'unpaired', 'appSessionId', app, 'runnerId', previous, 'reason', 'REPAIRED')
end
record('event', 'paired', 'appSessionId', app, 'runnerId', runner)
return {'ok', runner, previous}
"""
)

#: KEYS: session key, history stream. ARGV: app, history max len.
#: Returns the runner the app was paired with, or ''.
_UNPAIR = (
    DERIVED_KEYS
    + """
local history_key, history_max = KEYS[2], ARGV[2]
"""
    + RECORD_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
local ok, decoded = pcall(cjson.decode, raw)
if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
  local runner = decoded['runnerId']
  redis.call('SREM', apps_key_of(runner), ARGV[1])
  record('event', 'unpaired', 'appSessionId', ARGV[1], 'runnerId', runner,
    'reason', 'APP_UNPAIR')
  return runner
end
return ''
"""
)


class PairStatus(Enum):
    PAIRED = "ok"
    RATE_LIMITED = "limited"
    INVALID_CODE = "invalid"
    RUNNER_OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class PairOutcome:
    status: PairStatus
    runner_id: str | None = None
    previous_runner_id: str | None = None


class AppPairingService:
    """One round trip per app:pair and app:unpair, history included.

    Takes its limits and timings from the services whose keys it shares, so that the
    stand-alone calls (``RateLimitService``, ``PairingCodeService.redeem``, ...) and these
    scripts always agree.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        codes: PairingCodeService,
        rate_limit: RateLimitService,
        history: PairingHistoryService,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.codes = codes
        self.rate_limit = rate_limit
        self.history = history
        self._pair = Script(redis, _PAIR)
        self._unpair = Script(redis, _UNPAIR)
        self.cluster = ClusterPairing.for_layout(
            redis, layout, heartbeat_timeout_ms=codes.heartbeat_timeout_ms, steps=steps
        )

    async def load_scripts(self) -> None:
        if self.cluster is not None:
            await self.cluster.load_scripts()
        await preload(self.redis, self._pair, self._unpair)

    async def pair(
        self, code: str, app_session_id: str, *, address: str, code_shaped: bool = True
    ) -> PairOutcome:
        """Check the failure limit, redeem ``code`` for the app and record what happened.

        Past the limit nothing is checked nor counted (RATE_LIMITED). An unknown code (or one
        not ``code_shaped``, which is not looked up) counts a failure against the address and
        the app. An offline runner's code stays valid and counts no failure.
        """
        if self.cluster is not None:
            return await self._pair_in_steps(code, app_session_id, address, code_shaped)
        reply = await self._pair(
            [
                self.rate_limit.key("pair:addr", address),
                self.rate_limit.key("pair:app", app_session_id),
                self.layout.code(code if code_shaped else ""),
                self.layout.session(app_session_id),
                self.history.stream,
            ],
            [
                self.rate_limit.limit,
                self.rate_limit.window_ms,
                "1" if code_shaped else "0",
                code.upper() if code_shaped else "",
                app_session_id,
                self.codes.heartbeat_timeout_ms,
                self.history.max_len,
            ],
        )
        status = PairStatus(as_str(reply[0]))
        if status is PairStatus.PAIRED:
            return PairOutcome(status, as_str(reply[1]), as_str(reply[2]) or None)
        if status is PairStatus.RUNNER_OFFLINE:
            return PairOutcome(status, as_str(reply[1]))
        return PairOutcome(status)

    async def unpair(self, app_session_id: str) -> str | None:
        """Unpair the app (idempotent) and record it; returns the runner it was paired with."""
        if self.cluster is not None:
            previous_runner = await self.cluster.unpair(app_session_id)
            if previous_runner is not None:
                await self._record(
                    NewEntry(HistoryEvent.UNPAIRED, app_session_id, previous_runner, "APP_UNPAIR")
                )
            return previous_runner
        previous = await self._unpair(
            [self.layout.session(app_session_id), self.history.stream],
            [app_session_id, self.history.max_len],
        )
        return as_str(previous) or None

    # -- on a cluster: single-slot steps --------------------------------------------------

    async def _record(self, *entries: NewEntry) -> None:
        """One step: the entries of one app, in order, in one call."""
        assert self.cluster is not None
        await self.cluster.step("history")
        await self.history.record_many(list(entries))

    async def _pair_in_steps(
        self, code: str, app: str, address: str, code_shaped: bool
    ) -> PairOutcome:
        """``pair`` as steps: the limits (one read per subject, at once), then
        ``ClusterPairing.redeem``, then the failure count and the history entries (a crash
        before those loses them only)."""
        cluster = self.cluster
        assert cluster is not None
        limits = self.rate_limit
        subjects = [limits.key("pair:addr", address), limits.key("pair:app", app)]
        await cluster.step("limits")  # one key per subject, each in its slot: at once
        if await limits.is_limited(*subjects):
            return PairOutcome(PairStatus.RATE_LIMITED)
        if code_shaped:
            status, runner, previous = await cluster.redeem(code, app)
        else:
            status, runner, previous = "invalid", None, None
        if status == "invalid":
            await cluster.step("count")
            await limits.hit(*subjects)
            await self._record(NewEntry(HistoryEvent.PAIR_FAILED, app, reason="INVALID_CODE"))
            return PairOutcome(PairStatus.INVALID_CODE)
        if status == "offline":
            await self._record(NewEntry(HistoryEvent.PAIR_FAILED, app, runner, "RUNNER_OFFLINE"))
            return PairOutcome(PairStatus.RUNNER_OFFLINE, runner)
        entries = [NewEntry(HistoryEvent.PAIRED, app, runner)]
        if previous is not None and previous != runner:
            entries.insert(0, NewEntry(HistoryEvent.UNPAIRED, app, previous, "REPAIRED"))
        await self._record(*entries)
        return PairOutcome(PairStatus.PAIRED, runner, previous)
