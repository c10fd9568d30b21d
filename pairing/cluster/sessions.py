"""``PairingSessionService`` on a cluster: the session and the runner's set in their slots."""

from __future__ import annotations

from pairing import keys
from pairing.cluster.pairing import ClusterPairing, StepHook
from pairing.models import decode_session
from pairing.results import SessionStatus
from pairing.scripts import NOW_MS, Script, preload
from pairing.store import Redis

#: The runner's slot: a heartbeat written with the server's clock. KEYS: heartbeat. ARGV:
#: ttl ms. Returns the time written, for the index shard (another slot, the next step).
_HEARTBEAT = (
    NOW_MS
    + """
redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1])
return now
"""
)


class ClusterSessions:
    """Pair, unpair and removeAll as ``ClusterPairing``'s steps; ``steps`` runs before each."""

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
        self.heartbeat_ttl_ms = heartbeat_ttl_ms
        self.pairing = ClusterPairing(
            redis, layout, heartbeat_timeout_ms=heartbeat_timeout_ms, steps=steps
        )
        self._heartbeat = Script(redis, _HEARTBEAT)

    async def load_scripts(self) -> None:
        await self.pairing.load_scripts()
        await preload(self.redis, self._heartbeat)

    async def apps_of(self, runner_id: str) -> list[str]:
        return await self.pairing.apps_of(runner_id)

    async def update_heartbeat(self, runner_id: str) -> None:
        # The heartbeat, then the sweeper's index (another slot) with the same time.
        layout = self.layout
        now = await self._heartbeat([layout.heartbeat(runner_id)], [self.heartbeat_ttl_ms])
        await self.redis.zadd(layout.last_seen(runner_id), {runner_id: int(now)})

    async def remove_all(self, runner_id: str) -> list[str]:
        return await self.pairing.remove_all(runner_id)

    async def pair(self, app_session_id: str, runner_id: str) -> str | None:
        return await self.pairing.pair(app_session_id, runner_id)

    async def unpair(self, app_session_id: str) -> str | None:
        return await self.pairing.unpair(app_session_id)

    async def session_status(self, app_session_id: str) -> SessionStatus:
        # Two reads (the session, then its runner's heartbeat), each in its own slot.
        await self.pairing.step("session")
        raw = await self.redis.get(self.layout.session(app_session_id))
        session = None if raw is None else decode_session(raw)
        online = session is not None and await self.pairing.online(session.runner_id)
        return SessionStatus(session, online)
