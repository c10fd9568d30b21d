"""``RateLimitService`` on a cluster: each subject's counter on its own slot
(``ratelimit:<scope>:{<subject>}``), so a call on several subjects sends one command per
subject, all at once, instead of one for all."""

from __future__ import annotations

import asyncio
from typing import Any

from pairing.scripts import Script
from pairing.store import Redis


class ClusterRateLimit:
    """One command (or script) per subject's key, sent together."""

    def __init__(self, redis: Redis, hit: Script) -> None:
        self.redis = redis
        self._hit = hit

    async def counts(self, subject_keys: tuple[str, ...]) -> list[Any]:
        return list(await asyncio.gather(*(self.redis.get(k) for k in subject_keys)))

    async def hit(self, subject_keys: tuple[str, ...], window_ms: int) -> list[int]:
        replies = await asyncio.gather(*(self._hit([k], [window_ms]) for k in subject_keys))
        return [int(reply[0]) for reply in replies]

    async def reset(self, subject_keys: tuple[str, ...]) -> None:
        # A plain DEL per key: the cluster client's ``delete`` goes through a pipeline.
        send = self.redis.execute_command
        await asyncio.gather(*(send("DEL", k) for k in subject_keys))  # type: ignore[no-untyped-call]
