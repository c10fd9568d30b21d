"""AppPairingService: an app's pair and unpair, each with its checks and history, in one script.

``app:pair`` needs the failure rate limit, the code's redemption (runner online, code spent,
the app moved off its previous runner) and the history entries of whatever happened; done
in one Lua script, it is one round trip, a failed attempt's count and its history entry
cannot be split by a failure between them, and two replicas cannot both let one more attempt
through at the limit. ``app:unpair`` and its history entry likewise.

Keys the scripts derive from what they read (the runner's heartbeat, code and apps set) are
not in KEYS: they are not known before the script runs; every key known up front is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.codes import PairingCodeService
from pairing.history import RECORD_LUA, PairingHistoryService
from pairing.ratelimit import RateLimitService
from pairing.scripts import MOVE_APP, NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: KEYS: rate-limit key per address, per app; code key (a placeholder when the code is not
#: code-shaped: then it is not looked up); session key; history stream.
#: ARGV: limit, window ms, '1' if code-shaped, CODE, app, heartbeat timeout ms, runner-code
#: prefix, heartbeat prefix, apps prefix, history max len.
#: Returns {'limited'} | {'invalid'} | {'offline', runner} | {'ok', runner, previous}.
_PAIR = (
    NOW_MS
    + """
local history_key, history_max = KEYS[5], ARGV[10]
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
local hb = tonumber(redis.call('GET', ARGV[8] .. runner))
if not hb or now - hb > tonumber(ARGV[6]) then
  record('event', 'pair_failed', 'appSessionId', app, 'runnerId', runner,
    'reason', 'RUNNER_OFFLINE')
  return {'offline', runner}
end
redis.call('DEL', KEYS[3])
local rc = ARGV[7] .. runner
if redis.call('GET', rc) == ARGV[4] then redis.call('DEL', rc) end
local session_key, apps_prefix = KEYS[4], ARGV[9]
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

#: KEYS: session key, history stream. ARGV: app, apps prefix, history max len.
#: Returns the runner the app was paired with, or ''.
_UNPAIR = (
    """
local history_key, history_max = KEYS[2], ARGV[3]
"""
    + RECORD_LUA
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
local ok, decoded = pcall(cjson.decode, raw)
if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
  local runner = decoded['runnerId']
  redis.call('SREM', ARGV[2] .. runner, ARGV[1])
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
    ) -> None:
        self.redis = redis
        self.codes = codes
        self.rate_limit = rate_limit
        self.history = history
        self._pair = Script(redis, _PAIR)
        self._unpair = Script(redis, _UNPAIR)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._pair, self._unpair)

    async def pair(
        self, code: str, app_session_id: str, *, address: str, code_shaped: bool = True
    ) -> PairOutcome:
        """Check the failure limit, redeem ``code`` for the app and record what happened.

        Past the limit nothing is checked nor counted (RATE_LIMITED). An unknown code (or one
        not ``code_shaped``, which is not looked up) counts a failure against the address and
        the app. An offline runner's code stays valid and counts no failure.
        """
        reply = await self._pair(
            [
                self.rate_limit.key("pair:addr", address),
                self.rate_limit.key("pair:app", app_session_id),
                keys.code(code if code_shaped else ""),
                keys.session(app_session_id),
                self.history.stream,
            ],
            [
                self.rate_limit.limit,
                self.rate_limit.window_ms,
                "1" if code_shaped else "0",
                code.upper() if code_shaped else "",
                app_session_id,
                self.codes.heartbeat_timeout_ms,
                keys.RUNNER_CODE_PREFIX,
                keys.HEARTBEAT_PREFIX,
                keys.RUNNER_APPS_PREFIX,
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
        previous = await self._unpair(
            [keys.session(app_session_id), self.history.stream],
            [app_session_id, keys.RUNNER_APPS_PREFIX, self.history.max_len],
        )
        return as_str(previous) or None
