"""RateLimitService: fixed-window failure counters in Redis.

A window opens at the first counted failure of a subject (the counter's key gets the window
as TTL) and closes when the key expires; no clock is read, so replicas cannot disagree.

In the cluster layout each subject's counter is on its own slot
(``ratelimit:<scope>:{<subject>}``), so a call on several subjects sends one command per
subject, all at once, instead of one for all.
"""

from __future__ import annotations

import asyncio

from pairing import keys
from pairing.scripts import Script, preload
from pairing.store import Redis

#: INCR each key, giving a new counter the window as TTL. ARGV: window ms. Returns counts.
_HIT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""


class RateLimitService:
    """``limit`` counted events per ``window_s`` per subject; one round trip per call."""

    def __init__(
        self,
        redis: Redis,
        *,
        limit: int = 5,
        window_s: float = 60.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.window_ms = int(window_s * 1000)
        self.layout = layout
        self._hit = Script(redis, _HIT)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._hit)

    def key(self, scope: str, subject: str) -> str:
        return self.layout.rate_limit(scope, subject)

    async def is_limited(self, *subject_keys: str) -> bool:
        """True when any subject has used up its allowance in the current window."""
        if not subject_keys:
            return False
        if self.layout.cluster:
            counts = await asyncio.gather(*(self.redis.get(k) for k in subject_keys))
        else:
            counts = await self.redis.mget(list(subject_keys))
        return any(c is not None and int(c) >= self.limit for c in counts)

    async def hit(self, *subject_keys: str) -> list[int]:
        """Count one event against each subject; returns the counts in this window."""
        if not subject_keys:
            return []
        if self.layout.cluster:
            replies = await asyncio.gather(
                *(self._hit([k], [self.window_ms]) for k in subject_keys)
            )
            return [int(reply[0]) for reply in replies]
        counts = await self._hit(list(subject_keys), [self.window_ms])
        return [int(c) for c in counts]

    async def reset(self, *subject_keys: str) -> None:
        if not subject_keys:
            return
        if self.layout.cluster:
            # A plain DEL per key: the cluster client's ``delete`` goes through a pipeline.
            send = self.redis.execute_command
            await asyncio.gather(*(send("DEL", k) for k in subject_keys))  # type: ignore[no-untyped-call]
        else:
            await self.redis.delete(*subject_keys)
