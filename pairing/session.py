"""PairingSessionService: the seed's service, one Redis round trip per method.

Clock: online status is decided by the Redis server's ``TIME``, inside the same script that
reads the heartbeat, and heartbeats are written with that same clock. Every replica then
judges every runner by one clock; with each replica's own clock, a replica running a few
seconds fast would declare live runners offline (and its sweeper would unpair them), a replica
running slow would keep dead ones. Tests move time by writing heartbeat values relative to
the server's ``TIME``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pairing import keys
from pairing.cluster_pairing import ClusterPairing, StepHook
from pairing.models import PairingSession, decode_session
from pairing.scripts import (
    DERIVED_KEYS,
    MOVE_APP,
    NOW_MS,
    REMOVE_ALL_FOR_RUNNER,
    Script,
    as_str,
    preload,
)
from pairing.store import Redis

#: Moves app ARGV[1] to runner ARGV[2]; returns the previous runnerId ('' when none).
#: KEYS: session key, the runner's apps set. ARGV: app, runner.
_PAIR = (
    NOW_MS
    + DERIVED_KEYS
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
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
local ok, decoded = pcall(cjson.decode, raw)
if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
  redis.call('SREM', apps_key_of(decoded['runnerId']), ARGV[1])
  return decoded['runnerId']
end
return ''
"""
)

#: Online iff a heartbeat exists and is at most ARGV[1] ms old by the server's clock.
_ONLINE = (
    NOW_MS
    + """
local hb = tonumber(redis.call('GET', KEYS[1]))
if hb and now - hb <= tonumber(ARGV[1]) then return 1 end
return 0
"""
)

#: The session of an app plus whether its runner is online, for app:command and app:status.
#: KEYS: session key. ARGV: timeout ms. Returns {raw session or false, online}.
_SESSION_STATUS = (
    NOW_MS
    + DERIVED_KEYS
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {false, 0} end
local ok, decoded = pcall(cjson.decode, raw)
if not ok or type(decoded) ~= 'table' or type(decoded['runnerId']) ~= 'string' then
  return {raw, 0}
end
local hb = tonumber(redis.call('GET', heartbeat_key_of(decoded['runnerId'])))
if hb and now - hb <= tonumber(ARGV[1]) then return {raw, 1} end
return {raw, 0}
"""
)

#: Writes a heartbeat with the server's clock. KEYS: heartbeat key, last-seen zset (on a
#: cluster, in another slot: left out and written by the caller). ARGV: ttl ms, runnerId.
#: Returns the timestamp written.
_HEARTBEAT = (
    NOW_MS
    + """
redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1])
if #KEYS > 1 then redis.call('ZADD', KEYS[2], now, ARGV[2]) end
return now
"""
)

#: KEYS: the runner's apps set. ARGV: runner. Returns the unpaired apps.
_REMOVE_ALL = (
    DERIVED_KEYS
    + """
local runner = ARGV[1]
local apps_key = KEYS[1]
"""
    + REMOVE_ALL_FOR_RUNNER
    + """
return removed
"""
)


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """An app's pairing (or None) and whether its runner is online, read in one round trip."""

    session: PairingSession | None
    runner_online: bool


class PairingSessionService:
    """App <-> runner pairings and runner heartbeats over the seed's Redis layout.

    On one Redis (``layout.cluster`` false) every method is one script or command; on a
    cluster, pair, unpair, remove_all_sessions_for_runner, get_apps_by_runner_id and
    get_session_status run as single-slot steps (``pairing.cluster_pairing``); ``steps`` is
    called before each of those steps.
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
        self.cluster = ClusterPairing.for_layout(
            redis, layout, heartbeat_timeout_ms=self.heartbeat_timeout_ms, steps=steps
        )
        self._pair = Script(redis, _PAIR)
        self._unpair = Script(redis, _UNPAIR)
        self._online = Script(redis, _ONLINE)
        self._status = Script(redis, _SESSION_STATUS)
        self._heartbeat = Script(redis, _HEARTBEAT)
        self._remove_all = Script(redis, _REMOVE_ALL)

    async def load_scripts(self) -> None:
        if self.cluster is not None:
            await self.cluster.load_scripts()
        await preload(
            self.redis,
            self._pair,
            self._unpair,
            self._online,
            self._status,
            self._heartbeat,
            self._remove_all,
        )

    # -- the seed's API -------------------------------------------------------------------

    async def create_session(self, app_session_id: str, runner_id: str) -> None:
        """Pair (req 4.1, 4.5); an app paired elsewhere leaves its old runner's set."""
        await self.pair(app_session_id, runner_id)

    async def get_session(self, app_session_id: str) -> PairingSession | None:
        raw = await self.redis.get(self.layout.session(app_session_id))
        return None if raw is None else decode_session(raw)

    async def remove_session(self, app_session_id: str) -> None:
        await self.unpair(app_session_id)

    async def get_apps_by_runner_id(self, runner_id: str) -> list[str]:
        """The apps paired with the runner. On a cluster, the set members whose session
        names the runner (a member left by an interrupted operation is cleared here)."""
        if self.cluster is not None:
            return await self.cluster.apps_of(runner_id)
        members = await self.redis.smembers(self.layout.runner_apps(runner_id))
        return sorted(as_str(m) for m in members)

    async def is_runner_online(self, runner_id: str) -> bool:
        result = await self._online([self.layout.heartbeat(runner_id)], [self.heartbeat_timeout_ms])
        return bool(result)

    async def update_heartbeat(self, runner_id: str) -> None:
        layout = self.layout
        if self.cluster is not None:
            # The heartbeat, then the sweeper's index (another slot) with the same time.
            now = await self._heartbeat([layout.heartbeat(runner_id)], [self.heartbeat_ttl_ms])
            await self.redis.zadd(layout.last_seen(runner_id), {runner_id: int(now)})
            return
        await self._heartbeat(
            [layout.heartbeat(runner_id), layout.last_seen(runner_id)],
            [self.heartbeat_ttl_ms, runner_id],
        )

    async def remove_all_sessions_for_runner(self, runner_id: str) -> list[str]:
        """Unpair every app whose session still points here; returns exactly those apps."""
        if self.cluster is not None:
            return await self.cluster.remove_all(runner_id)
        removed = await self._remove_all([self.layout.runner_apps(runner_id)], [runner_id])
        return sorted(as_str(a) for a in removed)

    # -- additions the gateway needs (same single round trip) -----------------------------

    async def pair(self, app_session_id: str, runner_id: str) -> str | None:
        """Like create_session, returning the runner the app was paired with before."""
        if self.cluster is not None:
            return await self.cluster.pair(app_session_id, runner_id)
        previous = await self._pair(
            [self.layout.session(app_session_id), self.layout.runner_apps(runner_id)],
            [app_session_id, runner_id],
        )
        return as_str(previous) or None

    async def unpair(self, app_session_id: str) -> str | None:
        """Like remove_session, returning the runner the app was paired with."""
        if self.cluster is not None:
            return await self.cluster.unpair(app_session_id)
        previous = await self._unpair([self.layout.session(app_session_id)], [app_session_id])
        return as_str(previous) or None

    async def get_session_status(self, app_session_id: str) -> SessionStatus:
        if self.cluster is not None:
            # Two reads (the session, then its runner's heartbeat), each in its own slot.
            await self.cluster.step("session")
            session = await self.get_session(app_session_id)
            online = session is not None and await self.cluster.online(session.runner_id)
            return SessionStatus(session, online)
        raw, online = await self._status(
            [self.layout.session(app_session_id)], [self.heartbeat_timeout_ms]
        )
        if not raw:
            return SessionStatus(None, False)
        return SessionStatus(decode_session(raw), bool(online))
