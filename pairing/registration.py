"""RunnerRegistration: ``runner:register`` as one atomic step in one round trip.

One Lua script counts the attempt against the client address's registration limit, checks the
runner's key (and the operator's token verdict), registers the pairing code, binds or
refreshes the key, and makes the connection the runner's owner with a heartbeat. Any refusal
(RATE_LIMITED, UNAUTHORIZED, CODE_TAKEN) returns before anything but the attempt counter (and,
for UNAUTHORIZED, one history entry) is written: the live runner keeps its owner, code,
heartbeat and pairings.

Key binding: the first registration of a runnerId that carries a ``runnerKey`` binds the id to
it for ``key_ttl_s`` after its last successful registration. Redis holds only the key's
SHA-256. The runner generates the key at random (at least 22 chars of a base64 alphabet,
about 128 bits), so a fast hash is enough: there is no dictionary to try against a hash of a
random secret, and a leak of Redis gives nobody a key to present.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.codes import SET_CODE, generate_code
from pairing.history import HistoryEvent
from pairing.runners import CLAIM
from pairing.scripts import NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: KEYS: 1 attempt counter, 2 key binding, 3 code, 4 runner code, 5 owner, 6 heartbeat,
#: 7 last_seen, 8 history stream.
#: ARGV: 1 runner, 2 conn, 3 CODE, 4 code ttl ms, 5 code prefix, 6 heartbeat ttl ms,
#: 7 key hash ('' without a key), 8 key ttl ms, 9 key required ('1'/'0'), 10 token ok
#: ('1'/'0'), 11 attempts allowed, 12 window ms, 13 client address, 14 history max length.
#: Returns {'limited'} | {'unauthorized', reason} | {'taken', 0} | {'ok', expiresAt, previous}.
#:
#: The key check compares SHA-256 digests with Lua's ``~=``, which is not constant time. It
#: need not be: the attacker chooses the key, never the digest it is hashed to, and never
#: sees the stored digest, so how long a comparison of two digests takes tells nothing about
#: the key (learning a digest prefix would not help find a key that hashes to it).
_REGISTER = (
    NOW_MS
    + """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[12]) end
if attempts > tonumber(ARGV[11]) then return {'limited'} end
local presented = ARGV[7]
local bound = redis.call('GET', KEYS[2])
local refused = nil
if ARGV[10] ~= '1' then refused = 'BAD_TOKEN'
elseif bound and presented == '' then refused = 'KEY_MISSING'
elseif bound and bound ~= presented then refused = 'KEY_MISMATCH'
elseif not bound and presented == '' and ARGV[9] == '1' then refused = 'KEY_REQUIRED'
end
if refused then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[14], '*', 'event', 'register_refused',
    'runnerId', ARGV[1], 'reason', refused, 'address', ARGV[13])
  return {'unauthorized', refused}
end
local runner, conn, code = ARGV[1], ARGV[2], ARGV[3]
local code_key, runner_code_key, code_ttl, code_prefix = KEYS[3], KEYS[4], ARGV[4], ARGV[5]
"""
    + SET_CODE
    + """
if presented ~= '' then redis.call('SET', KEYS[2], presented, 'PX', ARGV[8]) end
local owner_key, heartbeat_key, last_seen_key = KEYS[5], KEYS[6], KEYS[7]
local heartbeat_ttl = ARGV[6]
"""
    + CLAIM
    + """
return {'ok', string.format('%.0f', now + tonumber(code_ttl)), previous}
"""
)

#: KEYS: key binding, history stream. ARGV: runner, history max length. Returns 1 if released.
_RELEASE_KEY = f"""
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event',
  '{HistoryEvent.RUNNER_KEY_RELEASED.value}', 'runnerId', ARGV[1])
return 1
"""


class RegistrationStatus(Enum):
    REGISTERED = "ok"
    RATE_LIMITED = "limited"
    UNAUTHORIZED = "unauthorized"
    CODE_TAKEN = "taken"


class RefusalReason(Enum):
    """Why a registration was UNAUTHORIZED; also the history entry's ``reason``."""

    BAD_TOKEN = "BAD_TOKEN"  # token does not match auth.runner_secret
    KEY_MISSING = "KEY_MISSING"  # the runnerId is bound, no key presented
    KEY_MISMATCH = "KEY_MISMATCH"  # the runnerId is bound to another key
    KEY_REQUIRED = "KEY_REQUIRED"  # require_key is set and no key presented


@dataclass(frozen=True, slots=True)
class Registration:
    status: RegistrationStatus
    code: str | None = None
    expires_at: int | None = None  # epoch ms, by the Redis server's clock
    #: The connection that owned the runner before (None when none); REGISTERED only.
    previous_owner: str | None = None
    reason: RefusalReason | None = None  # UNAUTHORIZED only


def key_digest(runner_key: str) -> str:
    """What Redis holds for a runnerKey: its SHA-256, hex."""
    return hashlib.sha256(runner_key.encode()).hexdigest()


class RunnerRegistration:
    """Register runners (limit, key binding, code, ownership) and release key bindings."""

    def __init__(
        self,
        redis: Redis,
        *,
        code_ttl_s: float = 300.0,
        heartbeat_ttl_s: float = 60.0,
        key_ttl_s: float = 2_592_000.0,
        require_key: bool = False,
        limit: int = 60,
        window_s: float = 60.0,
        history_max_len: int = 100_000,
    ) -> None:
        self.redis = redis
        self.code_ttl_ms = int(code_ttl_s * 1000)
        self.heartbeat_ttl_ms = int(heartbeat_ttl_s * 1000)
        self.key_ttl_ms = int(key_ttl_s * 1000)
        self.require_key = require_key
        self.limit = limit
        self.window_ms = int(window_s * 1000)
        self.history_max_len = history_max_len
        self._register = Script(redis, _REGISTER)
        self._release_key = Script(redis, _RELEASE_KEY)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._register, self._release_key)

    @staticmethod
    def attempts_key(address: str) -> str:
        return keys.rate_limit("register:addr", address)

    async def register(
        self,
        runner_id: str,
        conn_id: str,
        *,
        address: str,
        code: str | None = None,
        runner_key: str | None = None,
        token_ok: bool = True,
    ) -> Registration:
        """Register ``conn_id`` as runner ``runner_id`` from client ``address``.

        ``token_ok`` is the caller's verdict on the operator's shared-secret token (True when
        none is configured); it is checked inside the script so that a refused token counts
        against the address's limit like any other attempt. A generated code that collides
        with a live one is drawn again (at most 5 tries, each counted as an attempt).
        """
        digest = "" if runner_key is None else key_digest(runner_key)
        tries = 1 if code is not None else 5
        reply: list[bytes | str] = []
        candidate = ""
        for _ in range(tries):
            candidate = (code if code is not None else generate_code()).upper()
            reply = await self._register(
                [
                    self.attempts_key(address),
                    keys.runner_key(runner_id),
                    keys.code(candidate),
                    keys.runner_code(runner_id),
                    keys.owner(runner_id),
                    keys.heartbeat(runner_id),
                    keys.RUNNER_LAST_SEEN,
                    keys.HISTORY_STREAM,
                ],
                [
                    runner_id,
                    conn_id,
                    candidate,
                    self.code_ttl_ms,
                    keys.CODE_PREFIX,
                    self.heartbeat_ttl_ms,
                    digest,
                    self.key_ttl_ms,
                    "1" if self.require_key else "0",
                    "1" if token_ok else "0",
                    self.limit,
                    self.window_ms,
                    address,
                    self.history_max_len,
                ],
            )
            if as_str(reply[0]) != RegistrationStatus.CODE_TAKEN.value:
                break
        status = RegistrationStatus(as_str(reply[0]))
        if status is RegistrationStatus.UNAUTHORIZED:
            return Registration(status, reason=RefusalReason(as_str(reply[1])))
        if status is not RegistrationStatus.REGISTERED:
            return Registration(status)
        previous = as_str(reply[2])
        return Registration(status, candidate, int(reply[1]), previous or None)

    async def is_bound(self, runner_id: str) -> bool:
        return bool(await self.redis.exists(keys.runner_key(runner_id)))

    async def release_key(self, runner_id: str) -> bool:
        """Forget the runnerId's key binding (an operator's act); True if there was one.

        The runner's connection, code and pairings are left alone; its next registration
        binds whatever key it presents.
        """
        released = await self._release_key(
            [keys.runner_key(runner_id), keys.HISTORY_STREAM],
            [runner_id, self.history_max_len],
        )
        return bool(released)
