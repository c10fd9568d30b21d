"""PairingCodeService: short-lived, single-use codes by which an app finds a runner.

``pairing:code:{CODE}`` -> runnerId and ``pairing:runner_code:{runnerId}`` -> CODE, both
expiring together. Codes are stored upper-cased, so they compare case-insensitively.

In the cluster layout the two keys are in different slots (the code's ``{CODE}``, the
runner's ``{runnerId}``), so issuing a code is ordered single-slot steps: claim the code key
(refused when another runner holds it), then point the runner at it, then drop the code it
replaced. The runner's ``pairing:runner_code`` is the truth: a crash between the steps can
leave a code key whose runner points at another code, and a reader that checks both
(``runner_code(code's runner) == CODE``) refuses it; otherwise it expires with its TTL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.cluster_pairing import ClusterPairing, StepHook
from pairing.scripts import DERIVED_KEYS, MOVE_APP, NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: No 0/O, 1/I/L: a person reads the code off one screen and types it into another.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: 10 symbols of 31: 49.5 bits of entropy.
GENERATED_CODE_LENGTH = 10


class CodeTakenError(Exception):
    """The proposed code is live and held by another runner."""


#: Lua: the key of a code the script has read (one Redis only: on a cluster such a key is a
#: step of its own), spelt from ``pairing.keys`` like ``scripts.DERIVED_KEYS``.
CODE_KEY_OF = f"""
local function code_key_of(code) return '{keys.CODE_PREFIX}' .. code end
"""

#: Give ``runner`` the code ``code``, revoking its previous one; returns {'taken', 0} before
#: writing anything when another runner holds the code. Expects ``CODE_KEY_OF`` and locals
#: ``runner``, ``code``, ``code_key``, ``runner_code_key`` and ``code_ttl`` (ms).
SET_CODE = """
local holder = redis.call('GET', code_key)
if holder and holder ~= runner then return {'taken', 0} end
local old = redis.call('GET', runner_code_key)
if old and old ~= code then
  local old_key = code_key_of(old)
  if redis.call('GET', old_key) == runner then redis.call('DEL', old_key) end
end
redis.call('SET', code_key, runner, 'PX', code_ttl)
redis.call('SET', runner_code_key, code, 'PX', code_ttl)
"""

#: Cluster, the code's slot: claim ``KEYS[1]`` for runner ARGV[1] for ARGV[2] ms unless another
#: runner holds it. Returns {'taken'} or {'ok', now ms, 1 if the key was new else 0}.
CLAIM_CODE = (
    NOW_MS
    + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'taken'} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'ok', string.format('%.0f', now), holder and 0 or 1}
"""
)

#: Cluster, the runner's slot: point the runner at code ARGV[1] for ARGV[2] ms. KEYS:
#: runner-code key. Returns the code it pointed at before ('' when none).
POINT_RUNNER = """
local old = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return old
"""

#: Delete KEYS[1] if it holds ARGV[1] (a code key still naming the runner, a runner-code key
#: still naming the code). Returns 1 if deleted.
DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: code key, runner-code key. ARGV: runner, CODE, ttl ms.
#: Returns {'taken'} or {'ok', expiresAt}.
_REGISTER = (
    NOW_MS
    + CODE_KEY_OF
    + """
local runner, code, code_key, runner_code_key = ARGV[1], ARGV[2], KEYS[1], KEYS[2]
local code_ttl = ARGV[3]
"""
    + SET_CODE
    + """
return {'ok', string.format('%.0f', now + tonumber(ARGV[3]))}
"""
)

#: KEYS: code key. ARGV: CODE. Returns the runnerId or false.
_CONSUME = (
    DERIVED_KEYS
    + """
local runner = redis.call('GET', KEYS[1])
if not runner then return false end
redis.call('DEL', KEYS[1])
local rc = runner_code_key_of(runner)
if redis.call('GET', rc) == ARGV[1] then redis.call('DEL', rc) end
return runner
"""
)

#: KEYS: runner-code key. ARGV: runner.
_REVOKE = (
    CODE_KEY_OF
    + """
local code = redis.call('GET', KEYS[1])
if not code then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', code_key_of(code)) == ARGV[1] then redis.call('DEL', code_key_of(code)) end
return 1
"""
)

#: Redeem a code and pair in one step: the code is spent only when its runner is online.
#: KEYS: code key, session key. ARGV: CODE, app, timeout ms.
#: Returns {'invalid'} | {'offline', runner} | {'ok', runner, previous}.
_REDEEM = (
    NOW_MS
    + DERIVED_KEYS
    + """
local runner = redis.call('GET', KEYS[1])
if not runner then return {'invalid'} end
local hb = tonumber(redis.call('GET', heartbeat_key_of(runner)))
if not hb or now - hb > tonumber(ARGV[3]) then return {'offline', runner} end
redis.call('DEL', KEYS[1])
local rc = runner_code_key_of(runner)
if redis.call('GET', rc) == ARGV[1] then redis.call('DEL', rc) end
local app, session_key, apps_key = ARGV[2], KEYS[2], apps_key_of(runner)
"""
    + MOVE_APP
    + """
return {'ok', runner, previous}
"""
)


@dataclass(frozen=True, slots=True)
class RegisteredCode:
    code: str
    expires_at: int  # epoch ms, by the Redis server's clock


class RedeemStatus(Enum):
    PAIRED = "ok"
    INVALID_CODE = "invalid"
    RUNNER_OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class RedeemResult:
    status: RedeemStatus
    runner_id: str | None = None
    previous_runner_id: str | None = None


_CODE_SPACE = len(CODE_ALPHABET) ** GENERATED_CODE_LENGTH


def generate_code() -> str:
    """A uniformly random code: one draw below ``len(alphabet) ** length``, in that base.

    (``secrets.choice`` per character costs a ``getrandom`` system call each.)
    """
    n = secrets.randbelow(_CODE_SPACE)
    base = len(CODE_ALPHABET)
    chars = []
    for _ in range(GENERATED_CODE_LENGTH):
        n, digit = divmod(n, base)
        chars.append(CODE_ALPHABET[digit])
    return "".join(chars)


class PairingCodeService:
    """Register, redeem and revoke pairing codes; one live code per runner."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: float = 300.0,
        heartbeat_timeout_s: float = 30.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.ttl_ms = int(ttl_s * 1000)
        self.heartbeat_timeout_ms = int(heartbeat_timeout_s * 1000)
        #: On a cluster, redeem and consume run as single-slot steps (``steps`` called
        #: before each); see ``pairing.cluster_pairing``.
        self.cluster = ClusterPairing.for_layout(
            redis, layout, heartbeat_timeout_ms=self.heartbeat_timeout_ms, steps=steps
        )
        self._register = Script(redis, _REGISTER)
        self._consume = Script(redis, _CONSUME)
        self._revoke = Script(redis, _REVOKE)
        self._redeem = Script(redis, _REDEEM)
        # Code issuing on a cluster (``register``, ``revoke``).
        self._claim_code = Script(redis, CLAIM_CODE)
        self._point_runner = Script(redis, POINT_RUNNER)
        self._delete_if = Script(redis, DELETE_IF)

    async def load_scripts(self) -> None:
        scripts = [self._consume, self._redeem]
        if self.cluster is not None:
            await self.cluster.load_scripts()
            scripts += [self._claim_code, self._point_runner, self._delete_if]
        else:
            scripts += [self._register, self._revoke]
        await preload(self.redis, *scripts)

    async def register(self, runner_id: str, code: str | None = None) -> RegisteredCode:
        """Give the runner ``code`` (or a fresh one), revoking its previous code.

        Raises CodeTakenError when a proposed code is held by another runner. A generated
        code that happens to collide is simply drawn again.
        """
        attempts = 1 if code is not None else 5
        for _ in range(attempts):
            candidate = (code if code is not None else generate_code()).upper()
            if self.layout.cluster:
                issued = await self._issue_cluster(runner_id, candidate)
                if issued is not None:
                    return issued
                continue
            status, expires = await self._register(
                [self.layout.code(candidate), self.layout.runner_code(runner_id)],
                [runner_id, candidate, self.ttl_ms],
            )
            if as_str(status) == "ok":
                return RegisteredCode(candidate, int(expires))
        raise CodeTakenError(code or "generated")

    async def _issue_cluster(self, runner_id: str, code: str) -> RegisteredCode | None:
        """Claim the code (its slot), point the runner at it, drop the code it replaced;
        None when another runner holds the code (nothing written)."""
        claimed = await self._claim_code([self.layout.code(code)], [runner_id, self.ttl_ms])
        if as_str(claimed[0]) != "ok":
            return None
        old = await self.point_runner(runner_id, code)
        if old and old != code:
            await self.drop_code(old, runner_id)
        return RegisteredCode(code, int(claimed[1]) + self.ttl_ms)

    async def point_runner(self, runner_id: str, code: str) -> str:
        """Cluster: the runner's code is now ``code``; returns the one before ('' when none)."""
        old = await self._point_runner([self.layout.runner_code(runner_id)], [code, self.ttl_ms])
        return as_str(old)

    async def drop_code(self, code: str, runner_id: str) -> bool:
        """Cluster: delete code ``code`` if it still names ``runner_id``."""
        return bool(await self._delete_if([self.layout.code(code)], [runner_id]))

    async def lookup(self, code: str) -> str | None:
        """The runner holding ``code``, without spending it."""
        value = await self.redis.get(self.layout.code(code))
        return None if value is None else as_str(value)

    async def consume(self, code: str) -> str | None:
        """Spend ``code``; returns its runner, or None if unknown, expired or already used."""
        if self.cluster is not None:
            return await self.cluster.consume(code)
        runner = await self._consume([self.layout.code(code)], [code.upper()])
        return None if runner is None else as_str(runner)

    async def revoke(self, runner_id: str) -> bool:
        """Drop the runner's live code, if any.

        On a cluster: read the runner's code, delete the code key (its slot), then the
        runner's pointer if it still names that code. The code stops working first, so a
        crash between the steps leaves a runner showing a dead code, never a live code the
        runner no longer shows."""
        if not self.layout.cluster:
            return bool(await self._revoke([self.layout.runner_code(runner_id)], [runner_id]))
        code = await self.current_code(runner_id)
        if code is None:
            return False
        await self.drop_code(code, runner_id)
        await self._delete_if([self.layout.runner_code(runner_id)], [code])
        return True

    async def current_code(self, runner_id: str) -> str | None:
        value = await self.redis.get(self.layout.runner_code(runner_id))
        return None if value is None else as_str(value)

    async def redeem(self, code: str, app_session_id: str) -> RedeemResult:
        """Spend ``code`` and pair the app with its runner, atomically, if the runner is online.

        An offline runner's code stays valid (the runner may come back within its TTL).
        On a cluster the steps of ``ClusterPairing.redeem``, with the same outcomes.
        """
        if self.cluster is not None:
            name, runner, previous = await self.cluster.redeem(code, app_session_id)
            return RedeemResult(RedeemStatus(name), runner, previous)
        reply = await self._redeem(
            [self.layout.code(code), self.layout.session(app_session_id)],
            [code.upper(), app_session_id, self.heartbeat_timeout_ms],
        )
        status = RedeemStatus(as_str(reply[0]))
        if status is RedeemStatus.INVALID_CODE:
            return RedeemResult(status)
        if status is RedeemStatus.RUNNER_OFFLINE:
            return RedeemResult(status, as_str(reply[1]))
        return RedeemResult(status, as_str(reply[1]), as_str(reply[2]) or None)
