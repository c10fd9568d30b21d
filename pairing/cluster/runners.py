"""``RunnerRegistry`` on a cluster: the runner's slot, its apps' slots, an index shard's.

The index is ``keys.SHARDS`` sorted sets on their own slots, apart from the runner's keys: a
claim writes the runner's index entry first (a hint the sweeper checks against the heartbeat
key, so an entry for a runner that then fails to claim is harmless), then owner and heartbeat
in the runner's slot, so no claimed runner is missing from the index. A heartbeat writes its
runner's slot, and the index only when ``runner:last_seen_mark:{runnerId}`` has expired
(every half heartbeat timeout): one round trip for most beats, two for the others.

Release and sweep forget the runner (its slot: the commit point), unpair its apps
(``ClusterPairing.remove``), then drop its index entry, so that an interrupted release or
sweep is found by the next sweep.
"""

from __future__ import annotations

import asyncio

from pairing import keys
from pairing.cluster.pairing import ClusterPairing, StepHook, token_pairs
from pairing.results import StaleRunner
from pairing.scripts import HEARTBEAT_FRESH, NOW_MS, Script, as_str, preload
from pairing.store import Redis

#: An index shard: KEYS[1] gets runner ARGV[1] at now. Returns now.
INDEX = (
    NOW_MS
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
return string.format('%.0f', now)
"""
)

#: The runner's slot. KEYS: owner, heartbeat, index mark. ARGV: conn, heartbeat ttl
#: ms, mark ttl ms. Returns the previous owner or ''.
CLAIM_SLOT = (
    NOW_MS
    + """
local previous = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return previous
"""
)

#: The runner's slot: a heartbeat guarded by ownership, without the index. KEYS: owner, heartbeat,
#: index mark. ARGV: conn, heartbeat ttl ms, mark ttl ms. Returns 0 when taken over, 1 when
#: written, 2 when written and the index entry is due (mark expired, or owner re-claimed).
_OWNED_BEAT_SLOT = (
    NOW_MS
    + """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
local due = 1
if not owner then
  redis.call('SET', KEYS[1], ARGV[1])
  due = 2
end
if redis.call('SET', KEYS[3], '1', 'PX', ARGV[3], 'NX') then due = 2 end
return due
"""
)

#: Runner slot. KEYS: owner, heartbeat, apps set, tokens, index mark. ARGV: conn ('' for a
#: sweep: then the runner must be stale), timeout ms. Forgets the runner (owner, heartbeat and
#: index mark, so that a heartbeat after this writes the index entry again) and returns
#: {'gone', now, app, token, ...} with its set's members; {'alive', heartbeat} when a sweep
#: finds it beating again; false when ``conn`` does not own it.
_FORGET = (
    NOW_MS
    + HEARTBEAT_FRESH
    + """
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
else
  local hb = fresh_heartbeat(KEYS[2], ARGV[2])
  if hb then return {'alive', string.format('%.0f', hb)} end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
local out = {'gone', string.format('%.0f', now)}
for _, app in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  out[#out + 1] = app
  out[#out + 1] = redis.call('HGET', KEYS[4], app) or ''
end
return out
"""
)

#: Index shard slot. KEYS: shard. ARGV: timeout ms, limit. Stale runners, with their scores.
_STALE = (
    NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
  'LIMIT', 0, tonumber(ARGV[2]))
"""
)

#: Index shard slot. KEYS: shard. ARGV: runner, time. Drops the runner's entry unless a
#: heartbeat newer than ``time`` (a new registration) has moved it on.
_UNINDEX = """
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if score and score <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""


class ClusterRunners:
    """Claim, heartbeat, release and sweep in single-slot steps (``steps`` before each step
    of release and sweep)."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        heartbeat_timeout_ms: int,
        heartbeat_ttl_ms: int,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.heartbeat_ttl_ms = heartbeat_ttl_ms
        #: How long a heartbeat may skip the index shard (``keys.LAST_SEEN_MARK_PREFIX``).
        self.mark_ttl_ms = max(heartbeat_timeout_ms // 2, 1)
        self.pairing = ClusterPairing(
            redis, layout, heartbeat_timeout_ms=heartbeat_timeout_ms, steps=steps
        )
        self._index = Script(redis, INDEX)
        self._claim_slot = Script(redis, CLAIM_SLOT)
        self._beat_slot = Script(redis, _OWNED_BEAT_SLOT)
        self._forget = Script(redis, _FORGET)
        self._stale = Script(redis, _STALE)
        self._unindex = Script(redis, _UNINDEX)

    async def load_scripts(self) -> None:
        await self.pairing.load_scripts()
        await preload(
            self.redis,
            self._index,
            self._claim_slot,
            self._beat_slot,
            self._forget,
            self._stale,
            self._unindex,
        )

    def _slot_keys(self, runner_id: str) -> list[str]:
        """Owner, heartbeat and index mark, all in the runner's slot."""
        layout = self.layout
        return [
            layout.owner(runner_id),
            layout.heartbeat(runner_id),
            layout.last_seen_mark(runner_id),
        ]

    async def index(self, runner_id: str) -> int:
        """Put the runner in its index shard at the shard's now (returned)."""
        now = await self._index([self.layout.last_seen(runner_id)], [runner_id])
        return int(now)

    async def claim(self, runner_id: str, conn_id: str) -> str | None:
        await self.index(runner_id)
        previous = await self._claim_slot(
            self._slot_keys(runner_id), [conn_id, self.heartbeat_ttl_ms, self.mark_ttl_ms]
        )
        return as_str(previous) or None

    async def heartbeat(self, runner_id: str, conn_id: str) -> bool:
        written = int(
            await self._beat_slot(
                self._slot_keys(runner_id), [conn_id, self.heartbeat_ttl_ms, self.mark_ttl_ms]
            )
        )
        if written == 2:
            await self.index(runner_id)
        return written > 0

    async def release(self, runner_id: str, conn_id: str) -> list[str] | None:
        return await self._forget_in_steps(runner_id, conn_id, self.layout.last_seen(runner_id))

    async def _forget_in_steps(self, runner_id: str, conn_id: str, shard: str) -> list[str] | None:
        """Release (``conn_id``) or sweep ('') one runner; None when not owned (release) or
        beating again (sweep)."""
        cluster = self.pairing
        layout = self.layout
        await cluster.step("forget")
        reply = await self._forget(
            [
                layout.owner(runner_id),
                layout.heartbeat(runner_id),
                layout.runner_apps(runner_id),
                layout.app_tokens(runner_id),
                layout.last_seen_mark(runner_id),
            ],
            [conn_id, self.heartbeat_timeout_ms],
        )
        if reply is None:
            return None
        if as_str(reply[0]) == "alive":
            await cluster.step("index")
            await self.redis.zadd(shard, {runner_id: int(reply[1])}, gt=True)
            return None
        removed = await cluster.remove(runner_id, token_pairs(reply[2:]), unpair=True)
        await cluster.step("index")
        await self._unindex([shard], [runner_id, as_str(reply[1])])
        return removed

    async def sweep(self, limit: int) -> list[StaleRunner]:
        """Every index shard read at once (one step), then each stale runner, up to
        ``limit`` of them, forgotten and unpaired in turn."""
        shards = self.layout.last_seen_shards()
        await self.pairing.step("stale")
        found = await asyncio.gather(
            *(self._stale([shard], [self.heartbeat_timeout_ms, limit]) for shard in shards)
        )
        stale = [(as_str(r), shard) for shard, rs in zip(shards, found, strict=True) for r in rs]
        out: list[StaleRunner] = []
        for runner, shard in stale[:limit]:
            removed = await self._forget_in_steps(runner, "", shard)
            if removed is not None:
                out.append(StaleRunner(runner, removed))
        return out
