"""PairingSessionService: the seven methods of the original pairing design, and their Redis
layout (docs/architecture.md, "The pairing session service"), one round trip each on one Redis.

Clock: online status is decided by the Redis server's ``TIME``, inside the same script that
reads the heartbeat, and heartbeats are written with that same clock. Every replica then
judges every runner by one clock; with each replica's own clock, a replica running a few
seconds fast would declare live runners offline (and its sweeper would unpair them), a replica
running slow would keep dead ones. Tests move time by writing heartbeat values relative to
the server's ``TIME``.
"""

from __future__ import annotations

from typing import Protocol

from pairing import keys
from pairing.cluster.pairing import StepHook
from pairing.cluster.sessions import ClusterSessions
from pairing.models import PairingSession, decode_session
from pairing.results import SessionStatus
from pairing.scripts import (
    DERIVED_KEYS,
    HEARTBEAT_FRESH,
    MOVE_APP,
    NOW_MS,
    ONLINE,
    REMOVE_ALL_FOR_RUNNER,
    SESSION_JSON,
    SESSION_RUNNER,
    Script,
    as_str,
    preload,
)
from pairing.store import Redis

__all__ = ["OneRedisSessions", "PairingSessionService", "SessionBackend", "SessionStatus"]

#: Moves app ARGV[1] to runner ARGV[2]; returns the previous runnerId ('' when none).
#: KEYS: session key, the runner's apps set. ARGV: app, runner.
_PAIR = (
    NOW_MS
    + DERIVED_KEYS
    + SESSION_RUNNER
    + SESSION_JSON
    + """
local app, runner = ARGV[1], ARGV[2]
local session_key, apps_key = KEYS[1], KEYS[2]
"""
    + MOVE_APP
    + """
return previous
"""
)

#: Unpairs app ARGV[1]; returns the runnerId it was paired with ('' when none).
#: KEYS: session key. ARGV: app.
_UNPAIR = (
    DERIVED_KEYS
    + SESSION_RUNNER
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
local runner = session_runner(raw)
if not runner then return '' end
redis.call('SREM', apps_key_of(runner), ARGV[1])
return runner
"""
)

#: The session of an app plus whether its runner is online, for app:command and app:status.
#: KEYS: session key. ARGV: timeout ms. Returns {raw session or false, online}.
_SESSION_STATUS = (
    NOW_MS
    + DERIVED_KEYS
    + SESSION_RUNNER
    + HEARTBEAT_FRESH
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {false, 0} end
local runner = session_runner(raw)
if runner and fresh_heartbeat(heartbeat_key_of(runner), ARGV[1]) then return {raw, 1} end
return {raw, 0}
"""
)

#: Writes a heartbeat with the server's clock. KEYS: heartbeat key, last-seen zset.
#: ARGV: ttl ms, runnerId. Returns the timestamp written.
_HEARTBEAT = (
    NOW_MS
    + """
redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[2])
return now
"""
)

#: KEYS: the runner's apps set. ARGV: runner. Returns the unpaired apps.
_REMOVE_ALL = (
    DERIVED_KEYS
    + SESSION_RUNNER
    + """
local runner = ARGV[1]
local apps_key = KEYS[1]
"""
    + REMOVE_ALL_FOR_RUNNER
    + """
return removed
"""
)


class SessionBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterSessions`` is the other."""

    async def load_scripts(self) -> None: ...
    async def apps_of(self, runner_id: str) -> list[str]: ...
    async def update_heartbeat(self, runner_id: str) -> None: ...
    async def remove_all(self, runner_id: str) -> list[str]: ...
    async def pair(self, app_session_id: str, runner_id: str) -> str | None: ...
    async def unpair(self, app_session_id: str) -> str | None: ...
    async def session_status(self, app_session_id: str) -> SessionStatus: ...


class OneRedisSessions:
    """One script or command per method: every key is on the one server."""

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
        self._pair = Script(redis, _PAIR)
        self._unpair = Script(redis, _UNPAIR)
        self._status = Script(redis, _SESSION_STATUS)
        self._heartbeat = Script(redis, _HEARTBEAT)
        self._remove_all = Script(redis, _REMOVE_ALL)

    async def load_scripts(self) -> None:
        scripts = [self._pair, self._unpair, self._status, self._heartbeat, self._remove_all]
        await preload(self.redis, *scripts)

    async def apps_of(self, runner_id: str) -> list[str]:
        members = await self.redis.smembers(self.layout.runner_apps(runner_id))
        return sorted(as_str(m) for m in members)

    async def update_heartbeat(self, runner_id: str) -> None:
        layout = self.layout
        await self._heartbeat(
            [layout.heartbeat(runner_id), layout.last_seen(runner_id)],
            [self.heartbeat_ttl_ms, runner_id],
        )

    async def remove_all(self, runner_id: str) -> list[str]:
        removed = await self._remove_all([self.layout.runner_apps(runner_id)], [runner_id])
        return sorted(as_str(a) for a in removed)

    async def pair(self, app_session_id: str, runner_id: str) -> str | None:
        previous = await self._pair(
            [self.layout.session(app_session_id), self.layout.runner_apps(runner_id)],
            [app_session_id, runner_id],
        )
        return as_str(previous) or None

    async def unpair(self, app_session_id: str) -> str | None:
        previous = await self._unpair([self.layout.session(app_session_id)], [app_session_id])
        return as_str(previous) or None

    async def session_status(self, app_session_id: str) -> SessionStatus:
        raw, online = await self._status(
            [self.layout.session(app_session_id)], [self.heartbeat_timeout_ms]
        )
        if not raw:
            return SessionStatus(None, False)
        return SessionStatus(decode_session(raw), bool(online))


class PairingSessionService:
    """App <-> runner pairings and runner heartbeats.

    On one Redis (``OneRedisSessions``) every method is one script or command; on a cluster
    (``pairing.cluster.sessions``), pair, unpair, remove_all_sessions_for_runner,
    get_apps_by_runner_id and get_session_status run as single-slot steps, ``steps`` called
    before each of them.
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
        self.backend: SessionBackend = (
            ClusterSessions(
                redis, layout, heartbeat_timeout_ms=timeout_ms, heartbeat_ttl_ms=ttl_ms, steps=steps
            )
            if layout.cluster
            else OneRedisSessions(
                redis, layout, heartbeat_timeout_ms=timeout_ms, heartbeat_ttl_ms=ttl_ms
            )
        )
        self._online = Script(redis, ONLINE)

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()
        await preload(self.redis, self._online)

    # -- the seven methods of the original design -----------------------------------------

    async def create_session(self, app_session_id: str, runner_id: str) -> None:
        """Pair; an app paired elsewhere leaves its old runner's set (an app is paired with
        one runner at a time)."""
        await self.pair(app_session_id, runner_id)

    async def get_session(self, app_session_id: str) -> PairingSession | None:
        raw = await self.redis.get(self.layout.session(app_session_id))
        return None if raw is None else decode_session(raw)

    async def remove_session(self, app_session_id: str) -> None:
        await self.unpair(app_session_id)

    async def get_apps_by_runner_id(self, runner_id: str) -> list[str]:
        """The apps paired with the runner. On a cluster, the set members whose session
        names the runner (a member left by an interrupted operation is cleared here)."""
        return await self.backend.apps_of(runner_id)

    async def is_runner_online(self, runner_id: str) -> bool:
        result = await self._online([self.layout.heartbeat(runner_id)], [self.heartbeat_timeout_ms])
        return bool(result)

    async def update_heartbeat(self, runner_id: str) -> None:
        await self.backend.update_heartbeat(runner_id)

    async def remove_all_sessions_for_runner(self, runner_id: str) -> list[str]:
        """Unpair every app whose session still points here; returns exactly those apps."""
        return await self.backend.remove_all(runner_id)

    # -- what the gateway needs besides (the same round trips) ----------------------------

    async def pair(self, app_session_id: str, runner_id: str) -> str | None:
        """Like create_session, returning the runner the app was paired with before."""
        return await self.backend.pair(app_session_id, runner_id)

    async def unpair(self, app_session_id: str) -> str | None:
        """Like remove_session, returning the runner the app was paired with."""
        return await self.backend.unpair(app_session_id)

    async def get_session_status(self, app_session_id: str) -> SessionStatus:
        return await self.backend.session_status(app_session_id)
