"""``RunnerRegistration`` on a cluster: ordered single-slot steps.

The keys of a registration are on five slots (the address's counter, the runner's keys, the
code, an index shard, a history shard), so registering is ordered steps, each a script or
command on one hash tag (docs/round-trips.md):

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
"""

from __future__ import annotations

from pairing import keys
from pairing.cluster.codes import CLAIM_CODE, DELETE_IF, Claimed, claim_code
from pairing.cluster.runners import INDEX
from pairing.codes import generate_code
from pairing.history import HistoryEvent
from pairing.registration_policy import RegistrationPolicy
from pairing.results import RefusalReason, Registration, RegistrationStatus
from pairing.scripts import KEY_VERDICT, NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: Step 1, the counter's slot. KEYS: counter. ARGV: window ms. Returns the count.
_COUNT = """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return attempts
"""

#: Step 2, the runner's slot, read-only. KEYS: key binding. ARGV: key hash, key
#: required, token ok. Returns the refusal reason or ''.
_CHECK_KEY = (
    """
local presented, token_ok, key_required = ARGV[1], ARGV[3], ARGV[2]
local bound = redis.call('GET', KEYS[1])
"""
    + KEY_VERDICT
    + """
return refused or ''
"""
)

#: Step 5, the runner's slot. KEYS: key binding, runner code, owner, heartbeat, index
#: mark. ARGV: key hash, key required, CODE, code ttl ms, key ttl ms, conn, heartbeat ttl ms,
#: mark ttl ms. Returns {'unauthorized', reason} | {'ok', previous owner, replaced code}.
_CLAIM_REGISTERED = (
    NOW_MS
    + """
local presented, token_ok, key_required = ARGV[1], '1', ARGV[2]
local bound = redis.call('GET', KEYS[1])
"""
    + KEY_VERDICT
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

#: Release a key binding (the runner's slot). KEYS: key binding. Returns 1 if bound.
_RELEASE_KEY_SLOT = """
return redis.call('DEL', KEYS[1])
"""


class ClusterRegistration:
    """Register and release key bindings in the steps above."""

    def __init__(self, redis: Redis, layout: keys.KeyLayout, policy: RegistrationPolicy) -> None:
        self.redis = redis
        self.layout = layout
        self.policy = policy
        self._count = Script(redis, _COUNT)
        self._check_key = Script(redis, _CHECK_KEY)
        self._claim_code = Script(redis, CLAIM_CODE)
        self._index = Script(redis, INDEX)
        self._claim_registered = Script(redis, _CLAIM_REGISTERED)
        self._delete_if = Script(redis, DELETE_IF)
        self._release_key_slot = Script(redis, _RELEASE_KEY_SLOT)

    async def load_scripts(self) -> None:
        await preload(
            self.redis,
            self._count,
            self._check_key,
            self._claim_code,
            self._index,
            self._claim_registered,
            self._delete_if,
            self._release_key_slot,
        )

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
        """The steps in the module's docstring, each on one slot."""
        layout, policy = self.layout, self.policy
        required = "1" if policy.require_key else "0"
        claimed: Claimed | None = None
        candidate = ""
        for _ in range(tries):
            attempts = await self._count([attempts_key], [policy.window_ms])
            if int(attempts) > policy.limit:
                return Registration(RegistrationStatus.RATE_LIMITED)
            refused = as_str(
                await self._check_key(
                    [layout.runner_key(runner_id)], [digest, required, "1" if token_ok else "0"]
                )
            )
            if refused:
                return await self._refused(runner_id, address, refused)
            candidate = (code if code is not None else generate_code()).upper()
            claimed = await claim_code(
                self._claim_code, layout, candidate, runner_id, policy.code_ttl_ms
            )
            if claimed is not None:
                break
        if claimed is None:
            return Registration(RegistrationStatus.CODE_TAKEN)
        expires_at = claimed.at_ms + policy.code_ttl_ms
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
                policy.code_ttl_ms,
                policy.key_ttl_ms,
                conn_id,
                policy.heartbeat_ttl_ms,
                policy.mark_ttl_ms,
            ],
        )
        if RegistrationStatus(as_str(reply[0])) is RegistrationStatus.UNAUTHORIZED:
            # Another key was bound between steps 2 and 5: the code claimed for this
            # attempt goes again (only if it was new: it may be the runner's live code).
            if claimed.new:
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
            maxlen=self.policy.history_max_len,
            approximate=True,
        )
        return Registration(RegistrationStatus.UNAUTHORIZED, reason=RefusalReason(reason))

    async def release_key(self, runner_id: str) -> bool:
        """The binding (the runner's slot), then the history entry on its shard."""
        if not int(await self._release_key_slot([self.layout.runner_key(runner_id)], [])):
            return False
        await self.redis.xadd(
            self.layout.history(runner_id),
            {"event": HistoryEvent.RUNNER_KEY_RELEASED.value, "runnerId": runner_id},
            maxlen=self.policy.history_max_len,
            approximate=True,
        )
        return True
