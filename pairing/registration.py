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

In the cluster layout the keys are on five slots (the address's counter, the runner's keys,
the code, an index shard, a history shard), so registering is ordered single-slot steps,
each a script or command on one hash tag (docs/round-trips.md):

1. count the attempt (the counter's slot); over the limit: RATE_LIMITED, nothing else written;
2. check the token verdict and the key binding, read-only (the runner's slot); refused:
   one history entry (a history shard), UNAUTHORIZED;
3. claim the code (its slot), CODE_TAKEN when another runner holds it; a generated code that
   collides is drawn again from step 1;
4. the runner's index entry (an index shard): a hint the sweeper checks, written before the
   claim so that a crash never leaves a claimed runner outside the index;
5. check the binding again and, if it still holds, bind or refresh the key, point the runner
   at the code, make the connection the owner with a heartbeat (the runner's slot); if a
   racing registration bound another key meanwhile, the new code is dropped again;
6. drop the code the runner had before (its slot).

The runner's own keys (step 5) are the truth a client sees: before step 5 the live runner
keeps its owner, code, heartbeat and pairings; a code claimed in step 3 whose registration
went no further names the runner but is not the runner's code (and expires with its TTL).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.codes import CLAIM_CODE, CODE_KEY_OF, DELETE_IF, SET_CODE, generate_code
from pairing.history import HistoryEvent
from pairing.runners import CLAIM, INDEX
from pairing.scripts import NOW_MS, Script, as_str, preload
from pairing.store import Redis

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
local presented = ARGV[6]
local bound = redis.call('GET', KEYS[2])
local refused = nil
if ARGV[9] ~= '1' then refused = 'BAD_TOKEN'
elseif bound and presented == '' then refused = 'KEY_MISSING'
elseif bound and bound ~= presented then refused = 'KEY_MISMATCH'
elseif not bound and presented == '' and ARGV[8] == '1' then refused = 'KEY_REQUIRED'
end
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


#: Cluster step 1, the counter's slot. KEYS: counter. ARGV: window ms. Returns the count.
_COUNT = """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return attempts
"""

#: Lua: ``refused`` is the reason the key binding ``bound`` (or the token verdict) refuses the
#: presented key, nil when it does not. Expects ``presented``, ``bound``, ``token_ok`` and
#: ``key_required`` ('1'/'0').
_KEY_VERDICT = """
local refused = nil
if token_ok ~= '1' then refused = 'BAD_TOKEN'
elseif bound and presented == '' then refused = 'KEY_MISSING'
elseif bound and bound ~= presented then refused = 'KEY_MISMATCH'
elseif not bound and presented == '' and key_required == '1' then refused = 'KEY_REQUIRED'
end
"""

#: Cluster step 2, the runner's slot, read-only. KEYS: key binding. ARGV: key hash, key
#: required, token ok. Returns the refusal reason or ''.
_CHECK_KEY = (
    """
local presented, token_ok, key_required = ARGV[1], ARGV[3], ARGV[2]
local bound = redis.call('GET', KEYS[1])
"""
    + _KEY_VERDICT
    + """
return refused or ''
"""
)

#: Cluster step 5, the runner's slot. KEYS: key binding, runner code, owner, heartbeat, index
#: mark. ARGV: key hash, key required, CODE, code ttl ms, key ttl ms, conn, heartbeat ttl ms,
#: mark ttl ms. Returns {'unauthorized', reason} | {'ok', previous owner, replaced code}.
_CLAIM_REGISTERED = (
    NOW_MS
    + """
local presented, token_ok, key_required = ARGV[1], '1', ARGV[2]
local bound = redis.call('GET', KEYS[1])
"""
    + _KEY_VERDICT
    + """
if refused then return {'unauthorized', refused} end
if presented ~= '' then redis.call('SET', KEYS[1], presented, 'PX', ARGV[5]) end
local replaced = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
local previous = redis.call('GET', KEYS[3]) or ''
redis.call('SET', KEYS[3], ARGV[6])
redis.call('SET', KEYS[4], string.format('%.0f', now), 'PX', ARGV[7])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[8])
return {'ok', previous, replaced}
"""
)

#: Cluster: release a key binding (the runner's slot). KEYS: key binding. Returns 1 if bound.
_RELEASE_KEY_SLOT = """
return redis.call('DEL', KEYS[1])
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
        heartbeat_timeout_s: float = 30.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.code_ttl_ms = int(code_ttl_s * 1000)
        self.heartbeat_ttl_ms = int(heartbeat_ttl_s * 1000)
        self.key_ttl_ms = int(key_ttl_s * 1000)
        self.require_key = require_key
        self.limit = limit
        self.window_ms = int(window_s * 1000)
        self.history_max_len = history_max_len
        #: How long a heartbeat may skip the index shard (``keys.LAST_SEEN_MARK_PREFIX``).
        self.mark_ttl_ms = max(int(heartbeat_timeout_s * 1000) // 2, 1)
        if layout.cluster:
            self._scripts = [
                Script(redis, source)
                for source in (
                    _COUNT,
                    _CHECK_KEY,
                    CLAIM_CODE,
                    INDEX,
                    _CLAIM_REGISTERED,
                    DELETE_IF,
                    _RELEASE_KEY_SLOT,
                )
            ]
            (
                self._count,
                self._check_key,
                self._claim_code,
                self._index,
                self._claim_registered,
                self._delete_if,
                self._release_key_slot,
            ) = self._scripts
        else:
            self._register = Script(redis, _REGISTER)
            self._release_key = Script(redis, _RELEASE_KEY)
            self._scripts = [self._register, self._release_key]

    async def load_scripts(self) -> None:
        await preload(self.redis, *self._scripts)

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
        digest = "" if runner_key is None else key_digest(runner_key)
        tries = 1 if code is not None else 5
        if self.layout.cluster:
            return await self._register_cluster(
                runner_id, conn_id, address, code, digest, token_ok, tries
            )
        layout = self.layout
        reply: list[bytes | str] = []
        candidate = ""
        for _ in range(tries):
            candidate = (code if code is not None else generate_code()).upper()
            reply = await self._register(
                [
                    self.attempts_key(address),
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
                    self.code_ttl_ms,
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

    async def _register_cluster(
        self,
        runner_id: str,
        conn_id: str,
        address: str,
        code: str | None,
        digest: str,
        token_ok: bool,
        tries: int,
    ) -> Registration:
        """The steps in the module's docstring, each on one slot."""
        layout = self.layout
        required = "1" if self.require_key else "0"
        for _ in range(tries):
            attempts = await self._count([self.attempts_key(address)], [self.window_ms])
            if int(attempts) > self.limit:
                return Registration(RegistrationStatus.RATE_LIMITED)
            refused = as_str(
                await self._check_key(
                    [layout.runner_key(runner_id)], [digest, required, "1" if token_ok else "0"]
                )
            )
            if refused:
                return await self._refused(runner_id, address, refused)
            candidate = (code if code is not None else generate_code()).upper()
            claimed = await self._claim_code(
                [layout.code(candidate)], [runner_id, self.code_ttl_ms]
            )
            if as_str(claimed[0]) == "ok":
                break
        else:
            return Registration(RegistrationStatus.CODE_TAKEN)
        expires_at = int(claimed[1]) + self.code_ttl_ms
        await self._index([layout.last_seen(runner_id)], [runner_id])
        reply = await self._claim_registered(
            [
                layout.runner_key(runner_id),
                layout.runner_code(runner_id),
                layout.owner(runner_id),
                layout.heartbeat(runner_id),
                layout.last_seen_mark(runner_id),
            ],
            [
                digest,
                required,
                candidate,
                self.code_ttl_ms,
                self.key_ttl_ms,
                conn_id,
                self.heartbeat_ttl_ms,
                self.mark_ttl_ms,
            ],
        )
        if as_str(reply[0]) == RegistrationStatus.UNAUTHORIZED.value:
            # Another key was bound between steps 2 and 5: the code claimed for this
            # attempt goes again (only if it was new: it may be the runner's live code).
            if int(claimed[2]) == 1:
                await self._delete_if([layout.code(candidate)], [runner_id])
            return await self._refused(runner_id, address, as_str(reply[1]))
        previous, replaced = as_str(reply[1]), as_str(reply[2])
        if replaced and replaced != candidate:
            await self._delete_if([layout.code(replaced)], [runner_id])
        return Registration(RegistrationStatus.REGISTERED, candidate, expires_at, previous or None)

    async def _refused(self, runner_id: str, address: str, reason: str) -> Registration:
        await self.redis.xadd(
            self.layout.history(runner_id),
            {
                "event": HistoryEvent.REGISTER_REFUSED.value,
                "runnerId": runner_id,
                "reason": reason,
                "address": address,
            },
            maxlen=self.history_max_len,
            approximate=True,
        )
        return Registration(RegistrationStatus.UNAUTHORIZED, reason=RefusalReason(reason))

    async def is_bound(self, runner_id: str) -> bool:
        return bool(await self.redis.exists(self.layout.runner_key(runner_id)))

    async def release_key(self, runner_id: str) -> bool:
        """Forget the runnerId's key binding (an operator's act); True if there was one.

        The runner's connection, code and pairings are left alone; its next registration
        binds whatever key it presents. On a cluster the history entry is a second step on
        its shard, after the binding is gone.
        """
        if not self.layout.cluster:
            released = await self._release_key(
                [self.layout.runner_key(runner_id), self.layout.history(runner_id)],
                [runner_id, self.history_max_len],
            )
            return bool(released)
        if not int(await self._release_key_slot([self.layout.runner_key(runner_id)], [])):
            return False
        await self.redis.xadd(
            self.layout.history(runner_id),
            {"event": HistoryEvent.RUNNER_KEY_RELEASED.value, "runnerId": runner_id},
            maxlen=self.history_max_len,
            approximate=True,
        )
        return True
