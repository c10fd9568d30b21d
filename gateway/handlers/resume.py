"""Resume: held messages replayed after a reconnect, and every local delivery through the
socket's floors, so a relayed message reaches a connection at most once and in order, and a
gap in what it could get is announced (``terminal:gap``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.handlers.base import SEQ_EVENTS, STORE_ERRORS, Conn, GatewayBase, Role, decode_held
from gateway.protocol import ServerEvent
from pairing.relay import IN, OUT, Held

log = logging.getLogger("gateway.events")


class Resume(GatewayBase):
    """Replays, catch-ups and the floors every delivery to a local socket passes."""

    async def after_connect(self, sid: str) -> None:
        """The client has its CONNECT: replay held output to a resuming app, off the read loop."""
        conn = self.conns.get(sid)
        waiter = self._resume_waits.pop(sid, None)
        if conn is None or conn.resume_from is None:
            return
        task = asyncio.create_task(self._resume_app(conn, conn.resume_from, waiter))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_app(
        self, conn: Conn, after: int, waiter: asyncio.Future[None] | None
    ) -> None:
        conn.resume_from = None
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                if waiter is not None:
                    await waiter  # published output reaches us from here on
                held = await self.relay.held(conn.app_session_id, OUT, after)
            if held is not None:  # (None only when a pairing is asked for)
                await self._replay(conn, "", ServerEvent.TERMINAL_OUTPUT, after, held)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("resume").inc()
            log.warning("could not replay held output", extra={"error": repr(exc)})
            self._set_floor(conn, "", after)
        except Exception:
            log.exception("replay failed")
            self._set_floor(conn, "", after)
        finally:
            await self._release_held_back(conn)

    async def _replay(
        self, conn: Conn, stream: str, event: ServerEvent, after: int, held: Held
    ) -> None:
        """Send a stream's held messages after ``after``, a gap first if some are gone."""
        if held.last_seq <= after:
            # Nothing newer (or the counter started over below the client's lastSeq).
            self._set_floor(conn, stream, min(after, held.last_seq))
            return
        first = max(held.first_seq, after + 1) if held.messages else held.last_seq + 1
        if first > after + 1:
            await self._gap(conn, stream, after + 1, first - 1)
        for i, blob in enumerate(held.messages):
            data = decode_held(blob)
            data["seq"] = first + i
            await self.send(conn.sid, event.value, data)
        self.metrics.resumed.labels(event.value).inc(len(held.messages))
        self._set_floor(conn, stream, held.last_seq)

    async def _gap(self, conn: Conn, stream: str, first: int, last: int) -> None:
        """Tell the client which seqs it will never get (the hold no longer had them)."""
        gap: dict[str, Any] = {"fromSeq": first, "toSeq": last, "missed": last - first + 1}
        if stream:
            gap = {"appSessionId": stream, **gap}
        self.metrics.resume_gaps.inc()
        await self.send(conn.sid, ServerEvent.TERMINAL_GAP.value, gap)

    @staticmethod
    def _set_floor(conn: Conn, stream: str, seq: int) -> None:
        if conn.floors is None:
            conn.floors = {}
        conn.floors[stream] = seq

    async def _release_held_back(self, conn: Conn) -> None:
        """Live messages that arrived during a replay, in order, minus what it covered."""
        held_back = conn.held_back
        while held_back:
            event, data = held_back.pop(0)
            if await self._pass_floor(conn, event, data):
                await self.send(conn.sid, event, data)
        conn.held_back = None
        if conn.catch_up:
            await self.catch_up(conn.sid)

    async def catch_up(self, sid: str) -> None:
        """Another replica had this socket's room until now (it held an older socket of the
        app or runner, ``Fanout``'s ``moved``): what it delivered there, after this socket's
        replay read the hold, is in the hold; read it again after the socket's floors."""
        conn = self.conns.get(sid)
        if conn is None:
            return
        if conn.held_back is not None:
            conn.catch_up = True  # a replay is under way: once it is done
            return
        conn.catch_up = False
        if not conn.floors:
            return  # nothing relayed to it yet, nor a resume: it gets what comes from now on
        conn.held_back = []
        task = asyncio.create_task(self._catch_up(conn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _catch_up(self, conn: Conn) -> None:
        try:
            async with asyncio.timeout(self.options.store_timeout_s):
                for stream, floor in list((conn.floors or {}).items()):
                    if conn.role is Role.APP and not stream:
                        held = await self.relay.held(conn.app_session_id, OUT, floor)
                        event = ServerEvent.TERMINAL_OUTPUT
                    elif conn.role is Role.RUNNER and stream:
                        held = await self.relay.held(stream, IN, floor, paired_with=conn.runner_id)
                        event = ServerEvent.TERMINAL_INPUT
                    else:
                        continue
                    if held is not None:
                        await self._replay(conn, stream, event, floor, held)
        except STORE_ERRORS as exc:
            self.metrics.redis_errors.labels("resume").inc()
            log.warning("could not read the hold again", extra={"error": repr(exc)})
        except Exception:
            log.exception("catch-up failed")
        finally:
            await self._release_held_back(conn)

    async def deliver(self, sid: str, event: str, data: Any) -> None:
        """Every emit to a local socket; relayed messages pass its resume floors."""
        conn = self.conns.get(sid)
        if conn is not None and conn.peer_apps is not None and isinstance(data, dict):
            # The runner's replica sees its pairing changes: keep the relay's guess current.
            app = data.get("appSessionId")
            if not isinstance(app, str):
                pass
            elif event == ServerEvent.PAIRED.value and app not in conn.peer_apps:
                conn.peer_apps = sorted([*conn.peer_apps, app])
                conn.peer_apps_version += 1
            elif event == ServerEvent.APP_UNPAIRED.value and app in conn.peer_apps:
                conn.peer_apps = [a for a in conn.peer_apps if a != app]
                conn.peer_apps_version += 1
        if conn is not None and event in SEQ_EVENTS and isinstance(data, dict) and "seq" in data:
            if conn.held_back is not None:
                conn.held_back.append((event, data))
                return
            if not await self._pass_floor(conn, event, data):
                return
        await self.send(sid, event, data)

    async def _pass_floor(self, conn: Conn, event: str, data: dict[str, Any]) -> bool:
        """False for a seq this connection has had; reports a jump as a gap."""
        seq = data["seq"]
        stream = ""
        if event == ServerEvent.TERMINAL_INPUT.value:
            stream = data.get("appSessionId", "")
        floors = conn.floors
        if floors is None:
            floors = conn.floors = {}
        floor = floors.get(stream)
        if floor is not None and seq == 1 and conn.held_back is None:
            floor = None  # a stream starting over (the store lost its data): no duplicate
        if floor is not None:
            if seq <= floor:
                return False
            if seq > floor + 1:
                await self._gap(conn, stream, floor + 1, seq - 1)
        floors[stream] = seq
        return True
