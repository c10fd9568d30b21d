"""The gateway's browser pages: the terminal at ``/``, the operator console at ``/console``
(with its data endpoints and each replica's report), served from the built assets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.addresses import parse_networks
from gateway.config import Settings
from gateway.web.assets import Assets
from gateway.web.console import FAILURES, WINDOW_S, ConsoleApi
from gateway.web.pages import Pages
from gateway.web.reporter import LocalCounts, ReplicaReporter
from pairing import PairingHistoryService, RateLimitService, keys
from pairing.overview import OperatorOverview
from pairing.store import Redis

__all__ = ["add_web"]


def add_web(
    app: web.Application,
    settings: Settings,
    store: Redis,
    *,
    history: PairingHistoryService,
    replica_id: str,
    local: LocalCounts,
    fanout_healthy: Callable[[], bool],
    assets: Assets | None = None,
) -> None:
    """Add the pages' routes; with ``console.token`` set, the console's too, and this
    replica's reporter as a background task of ``app``."""
    layout = keys.layout_for(settings.redis_url)
    token = settings.console.token
    Pages(assets or Assets(), console_enabled=token is not None).add_routes(app.router)
    overview = OperatorOverview(
        store, heartbeat_timeout_s=settings.heartbeat.timeout_s, layout=layout
    )
    ConsoleApi(
        token=token,
        overview=overview,
        history=history,
        rate_limit=RateLimitService(store, limit=FAILURES, window_s=WINDOW_S, layout=layout),
        trusted=parse_networks(settings.trusted_proxies),
        report_interval_s=settings.console.report_interval_s,
        store_timeout_s=settings.store_timeout_s,
    ).add_routes(app.router)
    if token is None:
        return
    reporter = ReplicaReporter(
        overview,
        store,
        replica_id=replica_id,
        interval_s=settings.console.report_interval_s,
        local=local,
        fanout_healthy=fanout_healthy,
        store_timeout_s=settings.store_timeout_s,
    )

    async def reporting(app: web.Application) -> AsyncIterator[None]:
        reporter.start()
        yield
        await reporter.stop()

    app.cleanup_ctx.append(reporting)
