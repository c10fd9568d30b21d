"""Socket.IO connection state recovery (``socketio.connection_state_recovery``).

Every connection gets a pid, sent in its CONNECT reply; every event to an app carries its
position in the app's output log as an offset (its last argument). A client that lost its
connection presents both in its next CONNECT, on any replica: if the pid's record
(``pairing.recovery``) is there and the hold still has everything after the offset, the
connection is restored (same sid, same app, its room) and gets what it missed, in order,
before the CONNECT reply; otherwise it is a new session. Delivery to the restored connection
then goes through the same floors, held-back queue and catch-up as a resume with lastSeq
(``handlers.resume``), so every message arrives once, in order.

Runners are not restored: a runner's disconnect removes its pairings (the contract), so no
session is left to restore (its pid's record is dropped then); runners resume with
``runner:register`` ``lastSeq``. Their events carry an offset like every event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.engine.recovery import RECOVERABLE_REASONS
from gateway.handlers.base import STORE_ERRORS, Conn, Recoverable, Role
from gateway.handlers.connection import ConnectionEvents
from gateway.handlers.resume import Resume
from gateway.protocol import ServerEvent
from pairing.recovery import (
    PidRecord,
    covers,
    format_offset,
    is_pid_shaped,
    new_pid,
    new_token,
    parse_offset,
)
from pairing.relay import OUT

log = logging.getLogger("gateway.events")

_OUTPUT = ServerEvent.TERMINAL_OUTPUT.value
_GAP = ServerEvent.TERMINAL_GAP.value


@dataclass(frozen=True, slots=True)
class _Restoring:
    """A CONNECT found restorable, between ``restorable`` and its connect handler."""

    pid: str
    record: PidRecord
    #: The client's position: what it has of the app's output log.
    after: int


class Recovery(Resume, ConnectionEvents):
    """Pids, offsets and restores; the server's ``ConnectionRecovery``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: sid -> the restore its CONNECT is making.
        self._restoring: dict[str, _Restoring] = {}
        if self.recovery is not None and self.send_with_offset is not None:
            self._send_plain = self.send
            self.send = self._send_recovering

    # -- the server's questions -------------------------------------------------------------

    async def restorable(self, auth: Any) -> str | None:
        if self.recovery is None or not isinstance(auth, dict) or "pid" not in auth:
            return None
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                found = await self._find_restorable(auth)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("recover").inc()
            log.warning("could not look up a pid", extra={"error": repr(exc)})
            found = None
        if found is None or found.record.sid in self._restoring:
            self.metrics.recoveries.labels("new").inc()
            return None
        self._restoring[found.record.sid] = found
        return found.record.sid

    async def _find_restorable(self, auth: dict[str, Any]) -> _Restoring | None:
        """The session a CONNECT's pid names, if the hold has all it missed since its offset
        (an offset the gateway sent; without one, where its session started)."""
        recovery = self.recovery
        assert recovery is not None
        pid, offset = auth.get("pid"), auth.get("offset")
        after = parse_offset(offset)
        if not is_pid_shaped(pid) or (offset is not None and after is None):
            return None
        assert isinstance(pid, str)
        record = await recovery.find(pid)
        if record is None:
            return None
        presented = auth.get("appSessionId")
        if presented is not None and presented != record.app_session_id:
            return None  # another app's id: that one connects as itself
        if after is None:
            after = record.position  # it got no event
        if after < 0:
            return None
        if record.app:
            held = await self.relay.held(record.app_session_id, OUT, after)
            if held is None or not covers(held, after):
                return None
        return _Restoring(pid, record, after)

    def settled(self, sid: str) -> None:
        self._restoring.pop(sid, None)

    def pid_of(self, sid: str) -> str | None:
        conn = self.conns.get(sid)
        if conn is None or conn.recovery is None:
            return None
        return conn.recovery.pid

    # -- connection lifecycle ---------------------------------------------------------------

    async def connected(
        self, sid: str, address: str, app_session_id: str | None, last_seq: int | None = None
    ) -> None:
        restoring = self._restoring.pop(sid, None) if self._restoring else None
        if restoring is None:
            await super().connected(sid, address, app_session_id, last_seq)
        else:
            await self._restore(sid, address, restoring)

    async def _open_session(self, conn: Conn, last_seq: int | None) -> None:
        """A new session's pid and record; its start: 0 for a server-assigned id (a stream
        of its own, empty), lastSeq for a resuming app, else the app's position now."""
        recovery = self.recovery
        assert recovery is not None
        pid, token = new_pid(), new_token()
        start = 0 if not conn.presented else -1 if last_seq is None else last_seq
        record = PidRecord(token, conn.sid, conn.app_session_id, conn.presented, start)
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                start = await recovery.open(pid, record, read_position=start < 0)
        except STORE_ERRORS as exc:
            # No pid: the client connects as if recovery were off.
            self.metrics.redis_errors.labels("connect").inc()
            log.warning("could not store a pid", extra={"error": repr(exc)})
            return
        conn.recovery = Recoverable(pid, token, start, start)

    async def _mark_app(self, conn: Conn) -> None:
        state = conn.recovery
        recovery = self.recovery
        if state is None or recovery is None:
            return
        record = PidRecord(state.token, conn.sid, conn.app_session_id, True, state.start)
        await recovery.update(state.pid, record)

    async def _restore(self, sid: str, address: str, restoring: _Restoring) -> None:
        """The restored connection: its app's room (older sockets of it evicted anywhere),
        then what it missed, before the CONNECT reply goes (this runs in the connect
        handler); live output waits meanwhile and passes the floors after."""
        recovery = self.recovery
        assert recovery is not None
        pid, record, after = restoring.pid, restoring.record, restoring.after
        conn = Conn(
            sid=sid,
            conn_id=f"{self.replica_id}/{sid}",
            address=address,
            app_session_id=record.app_session_id,
            presented=record.app,
        )
        token = new_token()
        conn.recovery = Recoverable(pid, token, after, after)
        self.conns[sid] = conn
        self.metrics.recoveries.labels("recovered").inc()
        renewed = PidRecord(token, sid, record.app_session_id, record.app, after)
        if record.app:
            conn.held_back = []
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                await recovery.open(pid, renewed)
                if not record.app:
                    return
                waiter = await self._become_app(conn, confirm=True)
                if waiter is not None:
                    await waiter  # output published for the app reaches us from here on
                held = await self.relay.held(record.app_session_id, OUT, after)
            if held is not None:
                await self._replay(conn, "", ServerEvent.TERMINAL_OUTPUT, after, held)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("recover").inc()
            log.warning("could not replay to a restored connection", extra={"error": repr(exc)})
            self._set_floor(conn, "", after)
        except Exception:
            log.exception("restore failed")
            self._set_floor(conn, "", after)
        finally:
            if conn.held_back is not None:
                await self._release_held_back(conn)

    async def disconnected(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.get(sid)
        await super().disconnected(sid, reason)
        state = conn.recovery if conn is not None else None
        recovery = self.recovery
        if conn is None or state is None or recovery is None:
            return
        # Kept for the window after a network loss; dropped when the client left, a newer
        # connection took over, or it was a runner's (nothing to restore).
        recoverable = reason in RECOVERABLE_REASONS and conn.role is not Role.RUNNER
        record = PidRecord(
            state.token, sid, conn.app_session_id, conn.role is Role.APP, state.start
        )
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                await recovery.close(state.pid, record, recoverable=recoverable)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("disconnect").inc()
            log.warning("could not keep a pid for recovery", extra={"error": repr(exc)})

    # -- offsets ----------------------------------------------------------------------------

    async def _send_recovering(self, sid: str, event: str, data: Any) -> None:
        """Every send to a local socket when recovery is on: every event carries an offset
        as its last argument, the connection's position in its app's output log (a
        terminal:output its seq, an app's gap its last seq, any other event the position
        of the last one sent). A runner's stays where its connection started: it names
        nothing a runner could restore."""
        conn = self.conns.get(sid)
        state = conn.recovery if conn is not None else None
        if state is None:
            await self._send_plain(sid, event, data)
            return
        if type(data) is dict:
            if event == _OUTPUT:
                seq = data.get("seq")
                if type(seq) is int:
                    state.position = seq
            elif event == _GAP and "appSessionId" not in data:
                last = data.get("toSeq")
                if type(last) is int:
                    state.position = last
        assert self.send_with_offset is not None
        await self.send_with_offset(sid, event, data, format_offset(state.position))
