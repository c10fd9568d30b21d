"""The runner's events: ``runner:register``, ``runner:heartbeat``, ``runner:output``."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from gateway.fanout import room_for_app, room_for_runner
from gateway.handlers.base import RELAY_ATTEMPTS, Ack, Conn, Role, held_blob
from gateway.handlers.connection import ConnectionEvents
from gateway.handlers.resume import Resume
from gateway.protocol import (
    ErrorCode,
    GatewayError,
    HeartbeatPayload,
    OutputPayload,
    RegisterPayload,
    ServerEvent,
    check_depth,
    decode_args,
    require_e2e,
)
from pairing import RefusalReason, Registration, RegistrationStatus
from pairing.relay import IN

log = logging.getLogger("gateway.events")


#: UNAUTHORIZED messages, for people (the runner's operator reads them in its log).
_REFUSALS = {
    RefusalReason.BAD_TOKEN: "token does not match runnerId",
    RefusalReason.KEY_MISSING: "this runnerId is bound to a runnerKey; present it",
    RefusalReason.KEY_MISMATCH: "this runnerId is bound to a different runnerKey",
    RefusalReason.KEY_REQUIRED: "this gateway requires a runnerKey",
}


class RunnerEvents(Resume, ConnectionEvents):
    """Handlers of the runner's events; a registration replays the input held for it."""

    async def runner_register(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, RegisterPayload, fields_required=True)
        if conn.role is Role.APP:
            raise GatewayError(ErrorCode.WRONG_ROLE, "this connection is an app")
        runner_id = payload.runner_id
        reg = await self.registration.register(
            runner_id,
            conn.conn_id,
            address=conn.address,
            code=payload.pairing_code,
            runner_key=payload.runner_key,
            token_ok=self._token_ok(runner_id, payload.token),
        )
        if reg.status is not RegistrationStatus.REGISTERED:
            raise self._refusal(runner_id, conn, reg)
        assert reg.code is not None and reg.expires_at is not None
        if conn.runner_id is not None and conn.runner_id != runner_id:
            await self.fanout.leave(conn.sid, room_for_runner(conn.runner_id))
            await self._release_runner(conn.runner_id, conn.conn_id)
            conn.peer_apps = None
        resume = payload.last_seq or {}
        if resume and conn.held_back is None:
            conn.held_back = []  # live input waits until the held input is replayed
        try:
            if conn.role is not Role.RUNNER:
                conn.role = Role.RUNNER
                self.metrics.connected_runners.inc()
            conn.runner_id = runner_id
            room = room_for_runner(runner_id)
            conn.room = room
            waiter = await self.fanout.join(conn.sid, room, confirm=bool(resume))
            if reg.previous_owner is not None and reg.previous_owner != conn.conn_id:
                await self.fanout.evict(room, conn.sid)
            if waiter is not None:
                await waiter  # input published for this runner reaches us from here on
            for app, after in resume.items():
                held = await self.relay.held(app, IN, after, paired_with=runner_id)
                if held is not None:
                    await self._replay(conn, app, ServerEvent.TERMINAL_INPUT, after, held)
        finally:
            if resume:
                await self._release_held_back(conn)
        return {
            "success": True,
            "runnerId": runner_id,
            "pairingCode": payload.pairing_code or reg.code,
            "expiresAt": reg.expires_at,
            "heartbeatIntervalMs": int(self.options.heartbeat_interval_s * 1000),
        }

    def _refusal(self, runner_id: str, conn: Conn, reg: Registration) -> GatewayError:
        """The error ack of a refused registration; nothing was changed in the store."""
        if reg.status is RegistrationStatus.RATE_LIMITED:
            return GatewayError(
                ErrorCode.RATE_LIMITED, "too many runner registrations from this address"
            )
        if reg.status is RegistrationStatus.CODE_TAKEN:
            return GatewayError(
                ErrorCode.CODE_TAKEN, "that pairing code is in use by another runner"
            )
        reason = reg.reason or RefusalReason.BAD_TOKEN
        self.metrics.registrations_refused.labels(reason.value.lower()).inc()
        log.warning(
            "runner registration refused",
            extra={"runnerId": runner_id, "address": conn.address, "reason": reason.value},
        )
        return GatewayError(ErrorCode.UNAUTHORIZED, _REFUSALS[reason])

    def _token_ok(self, runner_id: str, token: str | None) -> bool:
        secret = self.options.runner_secret
        if secret is None:
            return True
        expected = hmac.new(secret.encode(), runner_id.encode(), hashlib.sha256).hexdigest()
        return token is not None and hmac.compare_digest(token.lower().encode(), expected.encode())

    def _registered_runner(self, conn: Conn) -> str:
        if conn.role is not Role.RUNNER or conn.runner_id is None:
            raise GatewayError(ErrorCode.NOT_REGISTERED, "send runner:register first")
        return conn.runner_id

    async def runner_heartbeat(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, HeartbeatPayload, fields_required=True)
        if conn.runner_id != payload.runner_id or conn.role is not Role.RUNNER:
            raise GatewayError(
                ErrorCode.NOT_REGISTERED, "this connection has not registered that runnerId"
            )
        if not await self.runners.heartbeat(payload.runner_id, conn.conn_id):
            raise GatewayError(
                ErrorCode.NOT_REGISTERED, "a newer registration of this runner took over"
            )
        return {"success": True}

    async def runner_output(self, conn: Conn, args: tuple[Any, ...]) -> Ack:
        payload = decode_args(args, OutputPayload, fields_required=True)
        if self.options.require_e2e:
            require_e2e(payload.data)
        check_depth(payload.data)
        runner_id = self._registered_runner(conn)
        message = {"runnerId": runner_id, "data": payload.data}
        blob = held_blob(message)
        event = ServerEvent.TERMINAL_OUTPUT.value
        target = payload.app_session_id
        known = conn.peer_apps
        if target is not None:
            apps = [] if known is not None and target not in known else [target]
        else:
            apps = known or []
        # The runner socket's pairing notifications keep ``known`` current (``deliver``),
        # and the store confirmed it lately: a cluster need not read the app set again.
        now, version = self.clock(), conn.peer_apps_version
        members_known = (
            known is not None and now - conn.peer_apps_checked < self.options.members_recheck_s
        )
        confirmed: list[str] | None = None  # the apps the store named during this call
        for _ in range(RELAY_ATTEMPTS):
            recipients = [self._recipient(a, room_for_app(a), event) for a in apps]
            result = await self.relay.output(
                runner_id, target, recipients, blob, members_known=members_known
            )
            if result.seqs is not None:
                if not members_known:
                    confirmed = apps
                break
            # Pairings changed since this replica last looked; the store just said which
            # (a cluster relays to them without asking again, one Redis checks anyway).
            apps = confirmed = result.members
            members_known = True
        else:
            raise GatewayError(ErrorCode.UNAVAILABLE, "pairings kept changing; retry")
        if target is None and confirmed is not None:
            if conn.peer_apps_version == version:
                conn.peer_apps = confirmed
                conn.peer_apps_checked = now
            else:  # a notification came meanwhile, maybe newer than what the store said
                conn.peer_apps_checked = float("-inf")
        for recipient, seq in zip(recipients, result.seqs, strict=True):
            if seq == 0:  # cluster: unpaired between the relay's steps, nothing sent
                conn.peer_apps_checked = float("-inf")  # ask the store next time
                continue
            if recipient.channel is None:
                self.fanout.delivered_locally += 1
                room = room_for_app(recipient.app_session_id)
                await self.fanout.deliver_here(room, event, {**message, "seq": seq})
            else:
                self.fanout.published += 1
        return {"success": True, "delivered": sum(1 for seq in result.seqs if seq)}
