"""Connection events: a socket's arrival and departure, and a runner's going when its
replica could not say so (the sweeper's findings)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from gateway.fanout import room_for_app
from gateway.handlers.base import STORE_ERRORS, Conn, GatewayBase, Role
from gateway.protocol import ErrorCode, GatewayError, ServerEvent, UnpairReason
from pairing import HistoryEvent, NewEntry, StaleRunner

log = logging.getLogger("gateway.events")


class ConnectionEvents(GatewayBase):
    """A socket's connect and disconnect, and announcing a runner gone."""

    async def connected(
        self, sid: str, address: str, app_session_id: str | None, last_seq: int | None = None
    ) -> None:
        """Register a new socket; an app presenting its id takes over older sockets of it.

        With ``last_seq`` the app resumes: live output waits (``held_back``) until
        ``after_connect`` has replayed what the hold has after it.
        """
        presented = app_session_id is not None
        conn = Conn(
            sid=sid,
            conn_id=f"{self.replica_id}/{sid}",
            address=address,
            app_session_id=app_session_id or secrets.token_urlsafe(24),
            presented=presented,
        )
        self.conns[sid] = conn
        if presented and last_seq is not None:
            conn.resume_from = last_seq
            conn.held_back = []
        if self.recovery is not None:
            await self._open_session(conn, last_seq if presented else None)
        if presented:
            try:
                async with asyncio.timeout(self.options.store_timeout_s):
                    await self._become_app(conn)
            except STORE_ERRORS as exc:
                # Local delivery works; older sockets elsewhere go when their pings fail.
                self.metrics.redis_errors.labels("connect").inc()
                log.warning("could not announce app connection", extra={"error": repr(exc)})

    async def disconnected(self, sid: str, reason: Any = None) -> None:
        self._resume_waits.pop(sid, None)
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        if conn.room is not None:
            await self.fanout.leave(sid, conn.room)
        if conn.role is Role.APP:
            self.metrics.connected_apps.dec()
            return  # an app's pairing outlives its socket: it reconnects to the same session
        if conn.role is not Role.RUNNER or conn.runner_id is None:
            return
        self.metrics.connected_runners.dec()
        if self.shutting_down:
            return
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                await self._release_runner(conn.runner_id, conn.conn_id)
        except STORE_ERRORS as exc:
            # The heartbeat goes stale instead, and a sweeper unpairs within the timeout.
            self.metrics.redis_errors.labels("disconnect").inc()
            log.warning(
                "runner release failed; the sweeper will finish it",
                extra={"runnerId": conn.runner_id, "error": repr(exc)},
            )

    async def _release_runner(self, runner_id: str, conn_id: str) -> None:
        apps = await self.runners.release(runner_id, conn_id)
        if apps is None:
            return  # taken over by a newer registration: nothing to remove
        await self._announce_runner_gone(runner_id, apps, UnpairReason.RUNNER_DISCONNECTED)

    async def runners_stale(self, stale: list[StaleRunner]) -> None:
        """Sweeper's findings: runners whose replica died without running a disconnect."""
        for runner in stale:
            await self._announce_runner_gone(
                runner.runner_id, runner.unpaired_apps, UnpairReason.RUNNER_OFFLINE
            )

    async def _announce_runner_gone(
        self, runner_id: str, apps: list[str], reason: UnpairReason
    ) -> None:
        payload = {"runnerId": runner_id, "reason": reason.value}
        for app in apps:
            await self.fanout.emit(room_for_app(app), ServerEvent.UNPAIRED, payload)
        kind = (
            HistoryEvent.RUNNER_DISCONNECTED
            if reason is UnpairReason.RUNNER_DISCONNECTED
            else HistoryEvent.RUNNER_OFFLINE
        )
        for _ in apps:
            self.metrics.pairings.labels(kind.value).inc()
        # One round trip for all; last, the runner's own entry: whoever reads it finds every
        # unpairing it caused already there.
        entries = [
            NewEntry(
                HistoryEvent.UNPAIRED, app_session_id=app, runner_id=runner_id, reason=reason.value
            )
            for app in apps
        ]
        entries.append(NewEntry(kind, runner_id=runner_id, reason=reason.value))
        await self.history.record_many(entries)

    async def _become_app(
        self, conn: Conn, *, confirm: bool = False
    ) -> asyncio.Future[None] | None:
        """Make the connection its app's, in the app's room; with ``confirm`` (or a lastSeq
        to resume from), returns the confirmation of the room's subscription."""
        if conn.role is Role.APP:
            return None
        if conn.role is Role.RUNNER:
            raise GatewayError(ErrorCode.WRONG_ROLE, "this connection is registered as a runner")
        conn.role = Role.APP
        self.metrics.connected_apps.inc()
        if conn.recovery is not None and not conn.presented:
            await self._mark_app(conn)
        room = room_for_app(conn.app_session_id)
        conn.room = room
        confirm = confirm or conn.resume_from is not None
        waiter = await self.fanout.join(conn.sid, room, confirm=confirm)
        if conn.resume_from is not None:
            self._resume_waits[conn.sid] = waiter
        if conn.presented:  # a server-assigned id has no older sockets to evict
            await self.fanout.evict(room, conn.sid)
        return waiter
