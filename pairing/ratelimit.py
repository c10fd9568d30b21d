"""RateLimitService: fixed-window failure counters in Redis.

A window opens at the first counted failure of a subject (the counter's key gets the window
as TTL) and closes when the key expires; no clock is read, so replicas cannot disagree.

On one Redis a call on several subjects is one command (``OneRedisRateLimit``); on a
cluster each subject's counter is on its own slot (``pairing.cluster.ratelimit``).
"""

from __future__ import annotations

from typing import Any, Protocol

from pairing import keys
from pairing.cluster.ratelimit import ClusterRateLimit
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


class RateLimitBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterRateLimit`` is the other."""

    async def counts(self, subject_keys: tuple[str, ...]) -> list[Any]: ...
    async def hit(self, subject_keys: tuple[str, ...], window_ms: int) -> list[int]: ...
    async def reset(self, subject_keys: tuple[str, ...]) -> None: ...


class OneRedisRateLimit:
    """Every subject's counter in one command."""

    def __init__(self, redis: Redis, hit: Script) -> None:
        self.redis = redis
        self._hit = hit

    async def counts(self, subject_keys: tuple[str, ...]) -> list[Any]:
        return list(await self.redis.mget(list(subject_keys)))

    async def hit(self, subject_keys: tuple[str, ...], window_ms: int) -> list[int]:
        counts = await self._hit(list(subject_keys), [window_ms])
        return [int(c) for c in counts]

    async def reset(self, subject_keys: tuple[str, ...]) -> None:
        await self.redis.delete(*subject_keys)


class RateLimitService:
    """``limit`` counted events per ``window_s`` per subject; one round trip per call on one
    Redis, one per subject (at once) on a cluster."""

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
        self.backend: RateLimitBackend = (
            ClusterRateLimit(redis, self._hit)
            if layout.cluster
            else OneRedisRateLimit(redis, self._hit)
        )

    async def load_scripts(self) -> None:
        await preload(self.redis, self._hit)

    def key(self, scope: str, subject: str) -> str:
        return self.layout.rate_limit(scope, subject)

    async def is_limited(self, *subject_keys: str) -> bool:
        """True when any subject has used up its allowance in the current window."""
        if not subject_keys:
            return False
        counts = await self.backend.counts(subject_keys)
        return any(c is not None and int(c) >= self.limit for c in counts)

    async def hit(self, *subject_keys: str) -> list[int]:
        """Count one event against each subject; returns the counts in this window."""
        if not subject_keys:
            return []
        return await self.backend.hit(subject_keys, self.window_ms)

    async def reset(self, *subject_keys: str) -> None:
        if not subject_keys:
            return
        await self.backend.reset(subject_keys)
