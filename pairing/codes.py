"""PairingCodeService: short-lived, single-use codes by which an app finds a runner.

``pairing:code:{CODE}`` -> runnerId and ``pairing:runner_code:{runnerId}`` -> CODE, both
expiring together. Codes are stored upper-cased, so they compare case-insensitively.
On one Redis each operation is one script (``OneRedisCodes``); on a cluster, where the two
keys are in different slots, ordered single-slot steps (``pairing.cluster.codes``).
"""

from __future__ import annotations

import secrets
from typing import Protocol

from pairing import keys
from pairing.cluster.codes import ClusterCodes
from pairing.cluster.pairing import StepHook
from pairing.results import RedeemResult, RedeemStatus, RegisteredCode
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
    "CODE_ALPHABET",
    "CodeBackend",
    "CodeTakenError",
    "OneRedisCodes",
    "PairingCodeService",
    "RedeemResult",
    "RedeemStatus",
    "RegisteredCode",
    "generate_code",
]

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
    + SESSION_RUNNER
    + SESSION_JSON
    + HEARTBEAT_FRESH
    + """
local runner = redis.call('GET', KEYS[1])
if not runner then return {'invalid'} end
if not fresh_heartbeat(heartbeat_key_of(runner), ARGV[3]) then return {'offline', runner} end
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


class CodeBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterCodes`` is the other."""

    async def load_scripts(self) -> None: ...
    async def issue(self, runner_id: str, code: str) -> RegisteredCode | None: ...
    async def consume(self, code: str) -> str | None: ...
    async def revoke(self, runner_id: str) -> bool: ...
    async def redeem(self, code: str, app_session_id: str) -> RedeemResult: ...


class OneRedisCodes:
    """One script per operation: both keys of a code are on the one server."""

    def __init__(
        self, redis: Redis, layout: keys.KeyLayout, *, ttl_ms: int, heartbeat_timeout_ms: int
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.ttl_ms = ttl_ms
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._register = Script(redis, _REGISTER)
        self._consume = Script(redis, _CONSUME)
        self._revoke = Script(redis, _REVOKE)
        self._redeem = Script(redis, _REDEEM)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._register, self._consume, self._revoke, self._redeem)

    async def issue(self, runner_id: str, code: str) -> RegisteredCode | None:
        status, expires = await self._register(
            [self.layout.code(code), self.layout.runner_code(runner_id)],
            [runner_id, code, self.ttl_ms],
        )
        return RegisteredCode(code, int(expires)) if as_str(status) == "ok" else None

    async def consume(self, code: str) -> str | None:
        runner = await self._consume([self.layout.code(code)], [code.upper()])
        return None if runner is None else as_str(runner)

    async def revoke(self, runner_id: str) -> bool:
        return bool(await self._revoke([self.layout.runner_code(runner_id)], [runner_id]))

    async def redeem(self, code: str, app_session_id: str) -> RedeemResult:
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
        ttl_ms, timeout_ms = self.ttl_ms, self.heartbeat_timeout_ms
        #: On a cluster, redeem and consume run as single-slot steps (``steps`` called
        #: before each).
        self.backend: CodeBackend = (
            ClusterCodes(redis, layout, ttl_ms=ttl_ms, heartbeat_timeout_ms=timeout_ms, steps=steps)
            if layout.cluster
            else OneRedisCodes(redis, layout, ttl_ms=ttl_ms, heartbeat_timeout_ms=timeout_ms)
        )

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()

    async def register(self, runner_id: str, code: str | None = None) -> RegisteredCode:
        """Give the runner ``code`` (or a fresh one), revoking its previous code.

        Raises CodeTakenError when a proposed code is held by another runner. A generated
        code that happens to collide is simply drawn again.
        """
        attempts = 1 if code is not None else 5
        for _ in range(attempts):
            candidate = (code if code is not None else generate_code()).upper()
            issued = await self.backend.issue(runner_id, candidate)
            if issued is not None:
                return issued
        raise CodeTakenError(code or "generated")

    async def lookup(self, code: str) -> str | None:
        """The runner holding ``code``, without spending it."""
        value = await self.redis.get(self.layout.code(code))
        return None if value is None else as_str(value)

    async def consume(self, code: str) -> str | None:
        """Spend ``code``; returns its runner, or None if unknown, expired or already used."""
        return await self.backend.consume(code)

    async def revoke(self, runner_id: str) -> bool:
        """Drop the runner's live code, if any."""
        return await self.backend.revoke(runner_id)

    async def current_code(self, runner_id: str) -> str | None:
        value = await self.redis.get(self.layout.runner_code(runner_id))
        return None if value is None else as_str(value)

    async def redeem(self, code: str, app_session_id: str) -> RedeemResult:
        """Spend ``code`` and pair the app with its runner, atomically, if the runner is online.

        An offline runner's code stays valid (the runner may come back within its TTL).
        On a cluster the steps of ``ClusterPairing.redeem``, with the same outcomes.
        """
        return await self.backend.redeem(code, app_session_id)
