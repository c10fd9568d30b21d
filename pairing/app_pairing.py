"""AppPairingService: an app's pair and unpair, each with its checks and history, in one script.

``app:pair`` needs the failure rate limit, the code's redemption (runner online, code spent,
the app moved off its previous runner) and the history entries of whatever happened; done
in one Lua script, it is one round trip, a failed attempt's count and its history entry
cannot be split by a failure between them, and two replicas cannot both let one more attempt
through at the limit. ``app:unpair`` and its history entry likewise.

Keys the scripts derive from what they read (the runner's heartbeat, code and apps set) are
not in KEYS: they are not known before the script runs; every key known up front is. On a
Redis Cluster, where those keys sit in other slots, both run as single-slot steps instead
(``pairing.cluster.app_pairing``), each history entry its own step.
"""

from __future__ import annotations

from typing import Protocol

from pairing import keys
from pairing.cluster.app_pairing import ClusterAppPairing
from pairing.cluster.pairing import StepHook
from pairing.codes import PairingCodeService
from pairing.history import RECORD_LUA, PairingHistoryService
from pairing.ratelimit import RateLimitService
from pairing.results import PairOutcome, PairStatus
from pairing.scripts import (
    DERIVED_KEYS,
    HEARTBEAT_FRESH,
    MOVE_APP,
    NOW_MS,
    SESSION_JSON,
    SESSION_RUNNER,
    Script,
    as_str,
    preload,
)
from pairing.store import Redis

__all__ = [
    "AppPairingBackend",
    "AppPairingService",
    "OneRedisAppPairing",
    "PairOutcome",
    "PairStatus",
]

#: KEYS: rate-limit key per address, per app; code key (a placeholder when the code is not
#: code-shaped: then it is not looked up); session key; history stream.
#: ARGV: limit, window ms, '1' if code-shaped, CODE, app, heartbeat timeout ms, history max len.
#: Returns {'limited'} | {'invalid'} | {'offline', runner} | {'ok', runner, previous}.
_PAIR = (
    NOW_MS
    + DERIVED_KEYS
    + SESSION_RUNNER
    + SESSION_JSON
    + HEARTBEAT_FRESH
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
if not fresh_heartbeat(heartbeat_key_of(runner), ARGV[6]) then
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
    + SESSION_RUNNER
    + """
local history_key, history_max = KEYS[2], ARGV[2]
"""
    + RECORD_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
local runner = session_runner(raw)
if not runner then return '' end
redis.call('SREM', apps_key_of(runner), ARGV[1])
record('event', 'unpaired', 'appSessionId', ARGV[1], 'runnerId', runner, 'reason', 'APP_UNPAIR')
return runner
"""
)


class AppPairingBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterAppPairing`` is the other."""

    async def load_scripts(self) -> None: ...
    async def pair(self, code: str, app: str, address: str, code_shaped: bool) -> PairOutcome: ...
    async def unpair(self, app_session_id: str) -> str | None: ...


class OneRedisAppPairing:
    """One script for ``pair``, one for ``unpair``, history included."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        codes: PairingCodeService,
        rate_limit: RateLimitService,
        history: PairingHistoryService,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.codes = codes
        self.rate_limit = rate_limit
        self.history = history
        self._pair = Script(redis, _PAIR)
        self._unpair = Script(redis, _UNPAIR)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._pair, self._unpair)

    async def pair(self, code: str, app: str, address: str, code_shaped: bool) -> PairOutcome:
        reply = await self._pair(
            [
                self.rate_limit.key("pair:addr", address),
                self.rate_limit.key("pair:app", app),
                self.layout.code(code if code_shaped else ""),
                self.layout.session(app),
                self.history.stream,
            ],
            [
                self.rate_limit.limit,
                self.rate_limit.window_ms,
                "1" if code_shaped else "0",
                code.upper() if code_shaped else "",
                app,
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
        previous = await self._unpair(
            [self.layout.session(app_session_id), self.history.stream],
            [app_session_id, self.history.max_len],
        )
        return as_str(previous) or None


class AppPairingService:
    """One round trip per app:pair and app:unpair on one Redis, history included.

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
        self.backend: AppPairingBackend = (
            ClusterAppPairing(
                redis,
                layout,
                rate_limit=rate_limit,
                history=history,
                heartbeat_timeout_ms=codes.heartbeat_timeout_ms,
                steps=steps,
            )
            if layout.cluster
            else OneRedisAppPairing(
                redis, layout, codes=codes, rate_limit=rate_limit, history=history
            )
        )

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()

    async def pair(
        self, code: str, app_session_id: str, *, address: str, code_shaped: bool = True
    ) -> PairOutcome:
        """Check the failure limit, redeem ``code`` for the app and record what happened.

        Past the limit nothing is checked nor counted (RATE_LIMITED). An unknown code (or one
        not ``code_shaped``, which is not looked up) counts a failure against the address and
        the app. An offline runner's code stays valid and counts no failure.
        """
        return await self.backend.pair(code, app_session_id, address, code_shaped)

    async def unpair(self, app_session_id: str) -> str | None:
        """Unpair the app (idempotent) and record it; returns the runner it was paired with."""
        return await self.backend.unpair(app_session_id)
