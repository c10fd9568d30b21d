"""Which connection owns a runner, and finding runners whose replica died.

A runner is owned by one connection at a time (``runner:owner:{runnerId}`` holds its
connection id). A newer registration takes over; the old connection's disconnect then finds
it no longer owns the runner and removes nothing. Heartbeats keep ``runner:last_seen`` (a
sorted set by last heartbeat) current so that a sweeper can find stale runners cheaply.

On one Redis each operation is one script (``OneRedisRunners``); on a cluster, where the
index is sharded apart from the runner's keys, single-slot steps (``pairing.cluster.runners``).
"""

from __future__ import annotations

from typing import Protocol

from pairing import keys
from pairing.cluster.pairing import StepHook
from pairing.cluster.runners import ClusterRunners
from pairing.results import StaleRunner
from pairing.scripts import (
    DERIVED_KEYS,
    HEARTBEAT_FRESH,
    NOW_MS,
    REMOVE_ALL_FOR_RUNNER,
    SESSION_RUNNER,
    Script,
    as_str,
    preload,
)
from pairing.store import Redis

__all__ = ["CLAIM", "OneRedisRunners", "RunnerBackend", "RunnerRegistry", "StaleRunner"]

_BEAT = """
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[1])
"""

#: Make ``conn`` the owner of ``runner`` and record a heartbeat at ``now``. Expects locals
#: ``runner``, ``conn``, ``owner_key``, ``heartbeat_key``, ``last_seen_key``, ``heartbeat_ttl``
#: (ms) and ``now``; leaves ``previous`` (the former owner, '' when none).
CLAIM = """
local previous = redis.call('GET', owner_key) or ''
redis.call('SET', owner_key, conn)
redis.call('SET', heartbeat_key, string.format('%.0f', now), 'PX', heartbeat_ttl)
redis.call('ZADD', last_seen_key, now, runner)
"""

#: KEYS: owner, heartbeat, last_seen. ARGV: runner, conn, ttl ms. Returns previous owner or ''.
_CLAIM = (
    NOW_MS
    + """
local runner, conn, heartbeat_ttl = ARGV[1], ARGV[2], ARGV[3]
local owner_key, heartbeat_key, last_seen_key = KEYS[1], KEYS[2], KEYS[3]
"""
    + CLAIM
    + """
return previous
"""
)

#: Heartbeat guarded by ownership. A missing owner (Redis lost its data, or a sweeper
#: judged the runner stale) is re-claimed; another owner means this connection was taken
#: over. Returns 1 when written, 0 when taken over.
_OWNED_BEAT = (
    NOW_MS
    + """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[2] then return 0 end
if not owner then redis.call('SET', KEYS[1], ARGV[2]) end
"""
    + _BEAT
    + """
return 1
"""
)

#: KEYS: owner, heartbeat, last_seen, apps set. ARGV: runner, conn.
#: Returns false when the connection no longer owns the runner, else the unpaired apps.
_RELEASE = (
    DERIVED_KEYS
    + SESSION_RUNNER
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local runner = ARGV[1]
local apps_key = KEYS[4]
"""
    + REMOVE_ALL_FOR_RUNNER
    + """
return removed
"""
)

#: Forget runners whose last heartbeat is older than ARGV[1] ms, at most ARGV[2] of them.
#: KEYS: last_seen. ARGV: timeout ms, limit.
#: Returns a flat list: runner, n, app1..appn, runner, n, ...
_SWEEP = (
    NOW_MS
    + DERIVED_KEYS
    + SESSION_RUNNER
    + HEARTBEAT_FRESH
    + """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
  'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, runner in ipairs(stale) do
  local hb = fresh_heartbeat(heartbeat_key_of(runner), ARGV[1])
  if hb then
    redis.call('ZADD', KEYS[1], hb, runner)
  else
    redis.call('ZREM', KEYS[1], runner)
    redis.call('DEL', owner_key_of(runner), heartbeat_key_of(runner))
    local apps_key = apps_key_of(runner)
"""
    + REMOVE_ALL_FOR_RUNNER
    + """
    out[#out + 1] = runner
    out[#out + 1] = #removed
    for _, app in ipairs(removed) do out[#out + 1] = app end
  end
end
return out
"""
)


class RunnerBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterRunners`` is the other."""

    async def load_scripts(self) -> None: ...
    async def claim(self, runner_id: str, conn_id: str) -> str | None: ...
    async def heartbeat(self, runner_id: str, conn_id: str) -> bool: ...
    async def release(self, runner_id: str, conn_id: str) -> list[str] | None: ...
    async def sweep(self, limit: int) -> list[StaleRunner]: ...


class OneRedisRunners:
    """One script per operation: the runner's keys and the index are on the one server."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        heartbeat_timeout_ms: int,
        heartbeat_ttl_ms: int,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.heartbeat_ttl_ms = heartbeat_ttl_ms
        self._claim = Script(redis, _CLAIM)
        self._beat = Script(redis, _OWNED_BEAT)
        self._release = Script(redis, _RELEASE)
        self._sweep = Script(redis, _SWEEP)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._claim, self._beat, self._release, self._sweep)

    def _runner_keys(self, runner_id: str) -> list[str]:
        layout = self.layout
        return [layout.owner(runner_id), layout.heartbeat(runner_id), layout.last_seen(runner_id)]

    async def claim(self, runner_id: str, conn_id: str) -> str | None:
        previous = await self._claim(
            self._runner_keys(runner_id), [runner_id, conn_id, self.heartbeat_ttl_ms]
        )
        return as_str(previous) or None

    async def heartbeat(self, runner_id: str, conn_id: str) -> bool:
        written = await self._beat(
            self._runner_keys(runner_id), [runner_id, conn_id, self.heartbeat_ttl_ms]
        )
        return bool(written)

    async def release(self, runner_id: str, conn_id: str) -> list[str] | None:
        result = await self._release(
            [*self._runner_keys(runner_id), self.layout.runner_apps(runner_id)],
            [runner_id, conn_id],
        )
        if result is None:
            return None
        return sorted(as_str(a) for a in result)

    async def sweep(self, limit: int) -> list[StaleRunner]:
        flat = await self._sweep(
            [self.layout.last_seen_shards()[0]], [self.heartbeat_timeout_ms, limit]
        )
        out: list[StaleRunner] = []
        i = 0
        while i < len(flat):
            runner = as_str(flat[i])
            n = int(flat[i + 1])
            apps = sorted(as_str(a) for a in flat[i + 2 : i + 2 + n])
            out.append(StaleRunner(runner, apps))
            i += 2 + n
        return out


class RunnerRegistry:
    """Runner ownership by connection, ownership-guarded heartbeats, and the stale sweep.

    On a cluster release and sweep run as single-slot steps (``pairing.cluster.runners``),
    ``steps`` called before each.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        heartbeat_timeout_s: float = 30.0,
        heartbeat_ttl_s: float = 60.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.heartbeat_timeout_ms = int(heartbeat_timeout_s * 1000)
        self.heartbeat_ttl_ms = int(heartbeat_ttl_s * 1000)
        timeout_ms, ttl_ms = self.heartbeat_timeout_ms, self.heartbeat_ttl_ms
        self.backend: RunnerBackend = (
            ClusterRunners(
                redis, layout, heartbeat_timeout_ms=timeout_ms, heartbeat_ttl_ms=ttl_ms, steps=steps
            )
            if layout.cluster
            else OneRedisRunners(
                redis, layout, heartbeat_timeout_ms=timeout_ms, heartbeat_ttl_ms=ttl_ms
            )
        )

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()

    async def claim(self, runner_id: str, conn_id: str) -> str | None:
        """Make ``conn_id`` the owner and record a heartbeat; returns the previous owner."""
        return await self.backend.claim(runner_id, conn_id)

    async def heartbeat(self, runner_id: str, conn_id: str) -> bool:
        """Record a heartbeat unless another connection has taken the runner over."""
        return await self.backend.heartbeat(runner_id, conn_id)

    async def owner(self, runner_id: str) -> str | None:
        value = await self.redis.get(self.layout.owner(runner_id))
        return None if value is None else as_str(value)

    async def release(self, runner_id: str, conn_id: str) -> list[str] | None:
        """On disconnect: if ``conn_id`` still owns the runner, forget it and unpair its apps.

        Returns the unpaired apps, or None when another connection owns the runner now (a
        takeover), in which case nothing is removed.
        """
        return await self.backend.release(runner_id, conn_id)

    async def sweep(self, limit: int = 100) -> list[StaleRunner]:
        """Forget runners without a heartbeat for longer than the timeout; unpair their apps.

        On a cluster, each index shard in turn, at most ``limit`` runners in all.
        """
        return await self.backend.sweep(limit)
