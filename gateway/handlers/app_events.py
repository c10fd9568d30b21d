"""The app's events: ``app:pair``, ``app:unpair``, ``app:status``, ``app:command``,
``app:resize``."""

from __future__ import annotations

from typing import Any

from gateway.fanout import room_for_runner
from gateway.handlers.base import RELAY_ATTEMPTS, Ack, Conn, held_blob
from gateway.handlers.connection import ConnectionEvents
from gateway.protocol import (
    E2E_REQUIRED,
    CommandPayload,
    EmptyPayload,
    ErrorCode,
    GatewayError,
    PairPayload,
    ResizePayload,
    ServerEvent,
    check_depth,
    decode_args,
    is_code_shaped,
    is_e2e,
    require_e2e,
)
from pairing import PairStatus
from pairing.relay import InputStatus


class AppEvents(ConnectionEvents):
    """Handlers of the app's events; the first one makes the connection an app."""

    async def app_pair(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, PairPayload, fields_required=True)
        await self._become_app(conn)
        app = conn.app_session_id
        code = payload.pairing_code
        # limit check, redemption, failure count and history: one script, one round trip
        result = await self.pairing.pair(
            code, app, address=conn.address, code_shaped=is_code_shaped(code)
        )
        status = result.status
        if status is PairStatus.RATE_LIMITED:
            raise GatewayError(
                ErrorCode.RATE_LIMITED, "too many failed pairing attempts; try again later"
            )
        if status is PairStatus.INVALID_CODE:
            raise GatewayError(ErrorCode.INVALID_CODE, "unknown, expired or already used code")
        if status is PairStatus.RUNNER_OFFLINE:
            raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the runner is offline")
        runner_id = result.runner_id
        assert runner_id is not None
        previous = result.previous_runner_id
        if previous is not None and previous != runner_id:
            await self.fanout.emit(
                room_for_runner(previous), ServerEvent.APP_UNPAIRED, {"appSessionId": app}
            )
        await self.fanout.emit(
            room_for_runner(runner_id), ServerEvent.PAIRED, {"appSessionId": app}
        )
        self.metrics.pairings.labels("paired").inc()
        conn.peer_runner = runner_id
        conn.mode_unseen = True
        return {"success": True, "runnerId": runner_id, "appSessionId": app}

    async def app_unpair(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        decode_args(args, EmptyPayload, fields_required=False)
        await self._become_app(conn)
        app = conn.app_session_id
        conn.peer_runner = None
        previous = await self.pairing.unpair(app)  # history entry included
        if previous is not None:
            await self.fanout.emit(
                room_for_runner(previous), ServerEvent.APP_UNPAIRED, {"appSessionId": app}
            )
            self.metrics.pairings.labels("unpaired").inc()
        return {"success": True}

    async def app_status(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        decode_args(args, EmptyPayload, fields_required=False)
        await self._become_app(conn)
        status = await self.sessions.get_session_status(conn.app_session_id)
        session = status.session
        return {
            "success": True,
            "paired": session is not None,
            "runnerId": None if session is None else session.runner_id,
            "runnerOnline": status.runner_online,
        }

    async def app_command(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, CommandPayload, fields_required=True)
        if self.options.require_e2e:
            require_e2e(payload.data)
        check_depth(payload.data)
        await self._become_app(conn)
        app = conn.app_session_id
        message = {"appSessionId": app, "data": payload.data}
        blob = held_blob(message)
        event = ServerEvent.TERMINAL_INPUT.value
        runner = conn.peer_runner
        for _ in range(RELAY_ATTEMPTS):
            room = room_for_runner(runner) if runner is not None else ""
            recipient = self._recipient(app, room, event) if runner is not None else None
            channel = None if recipient is None else recipient.channel
            prefix = b"" if recipient is None else recipient.prefix
            result = await self.relay.input(app, runner, channel, prefix, blob)
            status = result.status
            if status is InputStatus.NOT_PAIRED:
                conn.peer_runner = None
                raise GatewayError(ErrorCode.NOT_PAIRED, "pair with a runner first")
            if status is InputStatus.RUNNER_OFFLINE:
                raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the paired runner is offline")
            if status is InputStatus.OTHER_RUNNER:
                runner = conn.peer_runner = result.runner_id
                continue
            if channel is None:
                self.fanout.delivered_locally += 1
                await self.fanout.deliver_here(room, event, {**message, "seq": result.seq})
            else:
                self.fanout.published += 1
            if conn.mode_unseen:
                conn.mode_unseen = False
                mode = "e2e" if is_e2e(payload.data) else "plain"
                self.metrics.pairings_by_mode.labels(mode).inc()
            return {"success": True}
        raise GatewayError(ErrorCode.UNAVAILABLE, "the pairing kept changing; retry")

    async def app_resize(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        """The app's window size, to its runner as ``terminal:resize`` (not held for resume:
        only the newest size matters, and an app sends it again after a reconnect)."""
        payload = decode_args(args, ResizePayload, fields_required=True)
        if self.options.require_e2e:  # E2E clients send the size inside records
            raise GatewayError(ErrorCode.INVALID_PAYLOAD, E2E_REQUIRED)
        await self._become_app(conn)
        app = conn.app_session_id
        status = await self.sessions.get_session_status(app)
        if status.session is None:
            raise GatewayError(ErrorCode.NOT_PAIRED, "pair with a runner first")
        if not status.runner_online:
            raise GatewayError(ErrorCode.RUNNER_OFFLINE, "the paired runner is offline")
        await self.fanout.emit(
            room_for_runner(status.session.runner_id),
            ServerEvent.TERMINAL_RESIZE,
            {"appSessionId": app, "cols": payload.cols, "rows": payload.rows},
        )
        return {"success": True}
