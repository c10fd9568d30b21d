"""The aiohttp application: Socket.IO, health, readiness and metrics, wired from Settings.

Shared state lives under typed ``web.AppKey``s; the store, the fan-out listener and the
sweeper are opened and closed in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.addresses import parse_networks
from gateway.config import Settings
from gateway.engine import GatewayServer, build_server
from gateway.fanout import Fanout
from gateway.handlers import GatewayOptions, PairingGateway, Role, attach
from gateway.metrics import Metrics
from gateway.sweeper import Sweeper
from gateway.web import add_web
from pairing import (
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    RateLimitService,
    RunnerRegistration,
    RunnerRegistry,
    keys,
)
from pairing.recovery import RecoveryService
from pairing.relay import RelayService
from pairing.store import Redis, connect, is_memory_url, ping
from pairing.store.autopipeline import Durability

log = logging.getLogger("gateway")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Redis)
SIO = web.AppKey("sio", GatewayServer)
GATEWAY = web.AppKey("gateway", PairingGateway)
METRICS = web.AppKey("metrics", Metrics)
SWEEPER = web.AppKey("sweeper", Sweeper)
FANOUT = web.AppKey("fanout", Fanout)


def create_app(settings: Settings, *, replica_id: str | None = None) -> web.Application:
    replica_id = replica_id or secrets.token_hex(6)
    app = web.Application()
    store = connect(
        settings.redis_url,
        socket_timeout=settings.store_timeout_s,
        durability=Durability(settings.redis.wait_replicas, settings.redis.wait_timeout_ms),
    )
    #: Key and channel names for this deployment shape (hash-tagged on a Redis Cluster).
    layout = keys.layout_for(settings.redis_url)
    metrics = Metrics()
    _warn_recovery_outlives_hold(settings)
    sio = build_server(
        settings,
        on_slow_reader=metrics.slow_reader_cuts.inc,
        on_protocol_error=lambda kind: metrics.protocol_errors.labels(kind).inc(),
    )
    sio.attach(app, socketio_path="socket.io")

    async def send(sid: str, event: str, data: Any) -> None:
        await sio.emit_to(sid, event, data)

    async def local_emit(sid: str, event: str, data: Any) -> None:
        await gateway.deliver(sid, event, data)  # resume floors, then send

    async def local_disconnect(sid: str) -> None:
        await sio.disconnect(sid)

    fanout = Fanout(
        store,
        store,
        replica_id=replica_id,
        local_emit=local_emit,
        local_disconnect=local_disconnect,
        local_moved=lambda sid: gateway.catch_up(sid),
        on_listener_error=lambda: metrics.redis_errors.labels("fanout").inc(),
        layout=layout,
    )
    metrics.track_fanout(lambda: {"local": fanout.delivered_locally, "published": fanout.published})
    hb = settings.heartbeat
    sessions = PairingSessionService(
        store, heartbeat_timeout_s=hb.timeout_s, heartbeat_ttl_s=hb.ttl_s, layout=layout
    )
    runners = RunnerRegistry(
        store, heartbeat_timeout_s=hb.timeout_s, heartbeat_ttl_s=hb.ttl_s, layout=layout
    )
    gateway = PairingGateway(
        sessions=sessions,
        runners=runners,
        registration=RunnerRegistration(
            store,
            code_ttl_s=settings.pairing_code.ttl_s,
            heartbeat_ttl_s=hb.ttl_s,
            key_ttl_s=settings.auth.runner_key_ttl_s,
            require_key=settings.auth.require_runner_key,
            limit=settings.rate_limit.registrations,
            window_s=settings.rate_limit.window_s,
            history_max_len=settings.history.max_len,
            heartbeat_timeout_s=hb.timeout_s,
            layout=layout,
        ),
        codes=PairingCodeService(
            store,
            ttl_s=settings.pairing_code.ttl_s,
            heartbeat_timeout_s=hb.timeout_s,
            layout=layout,
        ),
        rate_limit=RateLimitService(
            store,
            limit=settings.rate_limit.pair_failures,
            window_s=settings.rate_limit.window_s,
            layout=layout,
        ),
        history=PairingHistoryService(store, max_len=settings.history.max_len, layout=layout),
        relay=RelayService(
            store,
            max_messages=settings.resume.max_messages,
            max_bytes=settings.resume.max_bytes,
            ttl_s=settings.resume.ttl_s,
            seq_ttl_s=settings.resume.seq_ttl_s,
            heartbeat_timeout_s=hb.timeout_s,
            layout=layout,
        ),
        fanout=fanout,
        send=send,
        recovery=(
            RecoveryService(store, window_s=settings.socketio.max_disconnection_s, layout=layout)
            if settings.socketio.connection_state_recovery
            else None
        ),
        send_with_offset=sio.emit_with_offset,
        metrics=metrics,
        options=GatewayOptions(
            heartbeat_interval_s=hb.interval_s,
            runner_secret=settings.auth.runner_secret,
            store_timeout_s=settings.store_timeout_s,
            require_e2e=settings.relay.require_e2e,
        ),
        replica_id=replica_id,
    )
    sweeper = Sweeper(
        store,
        runners,
        replica_id=replica_id,
        interval_s=settings.sweep_interval_s,
        on_stale=gateway.runners_stale,
        metrics=metrics,
        store_timeout_s=settings.store_timeout_s,
        layout=layout,
    )
    attach(sio, gateway, parse_networks(settings.trusted_proxies))

    app[SETTINGS] = settings
    app[STORE] = store
    app[SIO] = sio
    app[GATEWAY] = gateway
    app[METRICS] = metrics
    app[SWEEPER] = sweeper
    app[FANOUT] = fanout
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    add_web(
        app,
        settings,
        store,
        history=gateway.history,
        replica_id=replica_id,
        local=lambda: _local_counts(gateway),
        fanout_healthy=lambda: fanout.healthy,
    )
    return app


def _warn_recovery_outlives_hold(settings: Settings) -> None:
    """Connection state recovery restores only what the hold still has: a window longer
    than the hold's life promises recoveries that mostly cannot happen."""
    sio_cfg, resume = settings.socketio, settings.resume
    if not sio_cfg.connection_state_recovery:
        return
    if resume.max_messages == 0 or sio_cfg.max_disconnection_s > resume.ttl_s:
        log.warning(
            "socketio.max_disconnection_s outlives the hold (resume.ttl_s, "
            "resume.max_messages): a client that missed output after the hold let it go "
            "gets a new session, not a recovered one",
            extra={
                "max_disconnection_s": sio_cfg.max_disconnection_s,
                "resume_ttl_s": resume.ttl_s,
                "resume_max_messages": resume.max_messages,
            },
        )


def _local_counts(gateway: PairingGateway) -> tuple[int, list[str]]:
    """Apps connected to this replica, and the runners registered on it (for its report)."""
    apps, runners = 0, []
    for conn in gateway.conns.values():
        if conn.role is Role.APP:
            apps += 1
        elif conn.role is Role.RUNNER and conn.runner_id is not None:
            runners.append(conn.runner_id)
    return apps, runners


async def _background(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE]
    gateway = app[GATEWAY]
    if is_memory_url(settings.redis_url):
        log.warning(
            "using the embedded memory:// store: one replica only, nothing survives a restart",
            extra={"redis_url": settings.redis_url},
        )
    try:
        async with asyncio.timeout(settings.store_timeout_s):
            for service in (
                gateway.sessions,
                gateway.runners,
                gateway.registration,
                gateway.codes,
                gateway.rate_limit,
                gateway.relay,
                gateway.pairing,
                gateway.history,
            ):
                await service.load_scripts()
            if gateway.recovery is not None:
                await gateway.recovery.load_scripts()
    except Exception as exc:  # loaded on first use instead (redis-py reloads on NOSCRIPT)
        log.warning("could not preload Lua scripts", extra={"error": repr(exc)})
    app[FANOUT].start()
    app[SWEEPER].start()
    yield
    await app[SWEEPER].stop()
    await app[FANOUT].stop()
    await store.aclose()


async def _on_shutdown(app: web.Application) -> None:
    """Graceful stop: drop connections without unpairing runners; they reconnect elsewhere.

    Connections are cut at the transport instead of with a close handshake: a frozen
    client would otherwise hold the shutdown for aiohttp's 10 s websocket close timeout,
    and clients treat a cut transport as a reason to reconnect (to another replica).
    """
    gateway = app[GATEWAY]
    gateway.shutting_down = True
    await app[SWEEPER].stop()
    sio = app[SIO]
    sio.cut_transports()
    await sio.shutdown()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    checks = {"store": False, "fanout": app[FANOUT].healthy}
    try:
        async with asyncio.timeout(min(settings.store_timeout_s, 2.0)):
            checks["store"] = await ping(app[STORE])  # on a cluster: every master
    except Exception:
        app[METRICS].redis_errors.labels("readyz").inc()
    ready = all(checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", **checks}, status=200 if ready else 503
    )


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
