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

On one Redis that is one script (``OneRedisRegistration``); on a cluster, where the keys are
on five slots, ordered single-slot steps (``pairing.cluster.registration``).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from pairing import keys
from pairing.cluster.registration import ClusterRegistration
from pairing.codes import CODE_KEY_OF, SET_CODE, generate_code
from pairing.history import HistoryEvent
from pairing.registration_policy import RegistrationPolicy
from pairing.results import RefusalReason, Registration, RegistrationStatus
from pairing.runners import CLAIM
from pairing.scripts import KEY_VERDICT, NOW_MS, Script, as_str, preload
from pairing.store import Redis

__all__ = [
    "OneRedisRegistration",
    "RefusalReason",
    "Registration",
    "RegistrationBackend",
    "RegistrationStatus",
    "RunnerRegistration",
    "key_digest",
]

#: KEYS: 1 attempt counter, 2 key binding, 3 code, 4 runner code, 5 owner, 6 heartbeat,
#: 7 last_seen, 8 history stream.
#: ARGV: 1 runner, 2 conn, 3 CODE, 4 code ttl ms, 5 heartbeat ttl ms, 6 key hash ('' without
#: a key), 7 key ttl ms, 8 key required ('1'/'0'), 9 token ok ('1'/'0'), 10 attempts
#: allowed, 11 window ms, 12 client address, 13 history max length.
#: Returns {'limited'} | {'unauthorized', reason} | {'taken', 0} | {'ok', expiresAt, previous}.
#:
#: The key check compares SHA-256 digests with Lua's ``~=``, which is not constant time. It
#: need not be: the attacker chooses the key, never the digest it is hashed to, and never
#: sees the stored digest, so how long a comparison of two digests takes tells nothing about
#: the key (learning a digest prefix would not help find a key that hashes to it).
_REGISTER = (
    NOW_MS
    + CODE_KEY_OF
    + """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[11]) end
if attempts > tonumber(ARGV[10]) then return {'limited'} end
local presented, token_ok, key_required = ARGV[6], ARGV[9], ARGV[8]
local bound = redis.call('GET', KEYS[2])
"""
    + KEY_VERDICT
    + """
if refused then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[13], '*', 'event', 'register_refused',
    'runnerId', ARGV[1], 'reason', refused, 'address', ARGV[12])
  return {'unauthorized', refused}
end
local runner, conn, code = ARGV[1], ARGV[2], ARGV[3]
local code_key, runner_code_key, code_ttl = KEYS[3], KEYS[4], ARGV[4]
"""
    + SET_CODE
    + """
if presented ~= '' then redis.call('SET', KEYS[2], presented, 'PX', ARGV[7]) end
local owner_key, heartbeat_key, last_seen_key = KEYS[5], KEYS[6], KEYS[7]
local heartbeat_ttl = ARGV[5]
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


def key_digest(runner_key: str) -> str:
    """What Redis holds for a runnerKey: its SHA-256, hex."""
    return hashlib.sha256(runner_key.encode()).hexdigest()


class RegistrationBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterRegistration`` is the other."""

    async def load_scripts(self) -> None: ...
    async def register(
        self,
        runner_id: str,
        conn_id: str,
        *,
        attempts_key: str,
        address: str,
        code: str | None,
        digest: str,
        token_ok: bool,
        tries: int,
    ) -> Registration: ...
    async def release_key(self, runner_id: str) -> bool: ...


class OneRedisRegistration:
    """One script per registration, one per release."""

    def __init__(self, redis: Redis, layout: keys.KeyLayout, policy: RegistrationPolicy) -> None:
        self.redis = redis
        self.layout = layout
        self.policy = policy
        self._register = Script(redis, _REGISTER)
        self._release_key = Script(redis, _RELEASE_KEY)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._register, self._release_key)

    async def register(
        self,
        runner_id: str,
        conn_id: str,
        *,
        attempts_key: str,
        address: str,
        code: str | None,
        digest: str,
        token_ok: bool,
        tries: int,
    ) -> Registration:
        layout, policy = self.layout, self.policy
        reply: list[bytes | str] = []
        candidate = ""
        for _ in range(tries):
            candidate = (code if code is not None else generate_code()).upper()
            reply = await self._register(
                [
                    attempts_key,
                    layout.runner_key(runner_id),
                    layout.code(candidate),
                    layout.runner_code(runner_id),
                    layout.owner(runner_id),
                    layout.heartbeat(runner_id),
                    layout.last_seen(runner_id),
                    layout.history(runner_id),
                ],
                [
                    runner_id,
                    conn_id,
                    candidate,
                    policy.code_ttl_ms,
                    policy.heartbeat_ttl_ms,
                    digest,
                    policy.key_ttl_ms,
                    "1" if policy.require_key else "0",
                    "1" if token_ok else "0",
                    policy.limit,
                    policy.window_ms,
                    address,
                    policy.history_max_len,
                ],
            )
            if RegistrationStatus(as_str(reply[0])) is not RegistrationStatus.CODE_TAKEN:
                break
        status = RegistrationStatus(as_str(reply[0]))
        if status is RegistrationStatus.UNAUTHORIZED:
            return Registration(status, reason=RefusalReason(as_str(reply[1])))
        if status is not RegistrationStatus.REGISTERED:
            return Registration(status)
        previous = as_str(reply[2])
        return Registration(status, candidate, int(reply[1]), previous or None)

    async def release_key(self, runner_id: str) -> bool:
        released = await self._release_key(
            [self.layout.runner_key(runner_id), self.layout.history(runner_id)],
            [runner_id, self.policy.history_max_len],
        )
        return bool(released)


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
        heartbeat_timeout_s: float = 30.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.policy = RegistrationPolicy(
            code_ttl_ms=int(code_ttl_s * 1000),
            heartbeat_ttl_ms=int(heartbeat_ttl_s * 1000),
            key_ttl_ms=int(key_ttl_s * 1000),
            require_key=require_key,
            limit=limit,
            window_ms=int(window_s * 1000),
            history_max_len=history_max_len,
            mark_ttl_ms=max(int(heartbeat_timeout_s * 1000) // 2, 1),
        )
        backend = ClusterRegistration if layout.cluster else OneRedisRegistration
        self.backend: RegistrationBackend = backend(redis, layout, self.policy)

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()

    def attempts_key(self, address: str) -> str:
        return self.layout.rate_limit("register:addr", address)

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
        return await self.backend.register(
            runner_id,
            conn_id,
            attempts_key=self.attempts_key(address),
            address=address,
            code=code,
            digest="" if runner_key is None else key_digest(runner_key),
            token_ok=token_ok,
            tries=1 if code is not None else 5,
        )

    async def is_bound(self, runner_id: str) -> bool:
        return bool(await self.redis.exists(self.layout.runner_key(runner_id)))

    async def release_key(self, runner_id: str) -> bool:
        """Forget the runnerId's key binding (an operator's act); True if there was one.

        The runner's connection, code and pairings are left alone; its next registration
        binds whatever key it presents. On a cluster the history entry is a second step on
        its shard, after the binding is gone.
        """
        return await self.backend.release_key(runner_id)
