"""``PairingCodeService`` on a cluster: the code's slot, then the runner's.

The two keys of a code are in different slots (the code's ``{CODE}``, the runner's
``{runnerId}``), so issuing a code is ordered single-slot steps: claim the code key (refused
when another runner holds it), then point the runner at it, then drop the code it replaced.
The runner's ``pairing:runner_code`` is the truth: a crash between the steps can leave a code
key whose runner points at another code, and a reader that checks both
(``runner_code(code's runner) == CODE``) refuses it; otherwise it expires with its TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

from pairing import keys
from pairing.cluster.pairing import ClusterPairing, StepHook
from pairing.results import RedeemResult, RegisteredCode
from pairing.scripts import NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: The code's slot: claim ``KEYS[1]`` for runner ARGV[1] for ARGV[2] ms unless another runner
#: holds it. Returns {'taken'} or {'ok', now ms, 1 if the key was new else 0}.
CLAIM_CODE = (
    NOW_MS
    + """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'taken'} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'ok', string.format('%.0f', now), holder and 0 or 1}
"""
)

#: The runner's slot: point the runner at code ARGV[1] for ARGV[2] ms. KEYS: runner-code key.
#: Returns the code it pointed at before ('' when none).
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


@dataclass(frozen=True, slots=True)
class Claimed:
    """A code claimed for a runner (``CLAIM_CODE``)."""

    #: The server's clock when claimed, epoch ms (the code expires a TTL later).
    at_ms: int
    #: The code key did not exist before (else it was the runner's own live code).
    new: bool


async def claim_code(
    script: Script, layout: keys.KeyLayout, code: str, runner_id: str, ttl_ms: int
) -> Claimed | None:
    """Run ``CLAIM_CODE``: None when another runner holds ``code`` (nothing written)."""
    reply = await script([layout.code(code)], [runner_id, ttl_ms])
    if as_str(reply[0]) != "ok":
        return None
    return Claimed(int(reply[1]), int(reply[2]) == 1)


class ClusterCodes:
    """Issue, spend, revoke and redeem codes in single-slot steps (``steps`` before each
    step of redeem and consume)."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        ttl_ms: int,
        heartbeat_timeout_ms: int,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.ttl_ms = ttl_ms
        self.pairing = ClusterPairing(
            redis, layout, heartbeat_timeout_ms=heartbeat_timeout_ms, steps=steps
        )
        self._claim_code = Script(redis, CLAIM_CODE)
        self._point_runner = Script(redis, POINT_RUNNER)
        self._delete_if = Script(redis, DELETE_IF)

    async def load_scripts(self) -> None:
        await self.pairing.load_scripts()
        await preload(self.redis, self._claim_code, self._point_runner, self._delete_if)

    async def issue(self, runner_id: str, code: str) -> RegisteredCode | None:
        """Claim the code (its slot), point the runner at it, drop the code it replaced;
        None when another runner holds the code (nothing written)."""
        claimed = await claim_code(self._claim_code, self.layout, code, runner_id, self.ttl_ms)
        if claimed is None:
            return None
        old = as_str(
            await self._point_runner([self.layout.runner_code(runner_id)], [code, self.ttl_ms])
        )
        if old and old != code:
            await self._drop_code(old, runner_id)
        return RegisteredCode(code, claimed.at_ms + self.ttl_ms)

    async def _drop_code(self, code: str, runner_id: str) -> bool:
        """Delete code ``code`` if it still names ``runner_id``."""
        return bool(await self._delete_if([self.layout.code(code)], [runner_id]))

    async def consume(self, code: str) -> str | None:
        return await self.pairing.consume(code)

    async def revoke(self, runner_id: str) -> bool:
        """Read the runner's code, delete the code key (its slot), then the runner's pointer
        if it still names that code. The code stops working first, so a crash between the
        steps leaves a runner showing a dead code, never a live code the runner no longer
        shows."""
        raw = await self.redis.get(self.layout.runner_code(runner_id))
        if raw is None:
            return False
        code = as_str(raw)
        await self._drop_code(code, runner_id)
        await self._delete_if([self.layout.runner_code(runner_id)], [code])
        return True

    async def redeem(self, code: str, app_session_id: str) -> RedeemResult:
        return await self.pairing.redeem(code, app_session_id)
