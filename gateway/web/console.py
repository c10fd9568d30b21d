"""The operator console's data endpoints, ``GET /console/api/{runners,pairings,replicas,history}``.

Each needs ``Authorization: Bearer <console.token>`` (401 without it); the token is compared
in constant time, and wrong tokens are counted per client address in the store (every
replica sees the same count): past ``FAILURES`` within ``WINDOW_S`` the answer is 429 without
the token being looked at. With no token configured the endpoints do not exist (404).

appSessionIds are bearer credentials, so the console shows only their first characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from gateway.addresses import Network, client_address
from gateway.web.headers import secure
from gateway.web.pages import not_found
from pairing import PairingHistoryService, RateLimitService
from pairing.overview import OperatorOverview

log = logging.getLogger("gateway.console")

#: Wrong tokens allowed per client address and window.
FAILURES = 10
WINDOW_S = 60.0
#: How many runners and history entries one answer holds at most.
RUNNER_LIMIT = 500
HISTORY_LIMIT = 100
#: Characters of an appSessionId the console shows.
APP_PREFIX = 8

_json = msgspec.json.Encoder()
#: What a store that is down or slow raises.
STORE_ERRORS = (RedisError, OSError, TimeoutError)


def short_app(app_session_id: str | None) -> str | None:
    if app_session_id is None:
        return None
    return app_session_id[:APP_PREFIX] + ("..." if len(app_session_id) > APP_PREFIX else "")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_matches(given: str, expected: str) -> bool:
    """Constant time in the tokens' contents and lengths (both hashed first)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def _answer(status: int, body: Any, extra: dict[str, str] | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store", "Content-Type": "application/json"}
    headers.update(extra or {})
    secure(headers)
    return web.Response(status=status, body=_json.encode(body), headers=headers)


Handler = Callable[[web.Request], Awaitable[web.Response]]


class ConsoleApi:
    def __init__(
        self,
        *,
        token: str | None,
        overview: OperatorOverview,
        history: PairingHistoryService,
        rate_limit: RateLimitService,
        trusted: Sequence[Network],
        report_interval_s: float,
        store_timeout_s: float,
    ) -> None:
        self.token = token
        self.overview = overview
        self.history = history
        self.rate_limit = rate_limit
        self.trusted = list(trusted)
        self.report_interval_ms = int(report_interval_s * 1000)
        self.store_timeout_s = store_timeout_s

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/console/api/runners", self._guarded(self.runners))
        router.add_get("/console/api/pairings", self._guarded(self.pairings))
        router.add_get("/console/api/replicas", self._guarded(self.replicas))
        router.add_get("/console/api/history", self._guarded(self.history_entries))

    def _guarded(self, view: Callable[[], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            if self.token is None:
                return not_found()
            address = client_address(
                {
                    "aiohttp.request": request,
                    "HTTP_X_FORWARDED_FOR": request.headers.get("X-Forwarded-For", ""),
                },
                self.trusted,
            )
            limit_key = self.rate_limit.key("console", address)
            try:
                async with asyncio.timeout(self.store_timeout_s):
                    if await self.rate_limit.is_limited(limit_key):
                        return _answer(
                            429,
                            {"error": "RATE_LIMITED", "message": "too many wrong tokens"},
                            {"Retry-After": str(int(WINDOW_S))},
                        )
                    if not self._authorized(request):
                        await self.rate_limit.hit(limit_key)
                        log.warning("console: wrong operator token", extra={"address": address})
                        return _answer(
                            401,
                            {"error": "UNAUTHORIZED", "message": "operator token required"},
                            {"WWW-Authenticate": 'Bearer realm="console"'},
                        )
                    body = await view()
            except STORE_ERRORS:
                return _answer(503, {"error": "UNAVAILABLE", "message": "the store is unreachable"})
            return _answer(200, body)

        return handler

    def _authorized(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return token_matches(given.strip(), self.token)

    async def runners(self) -> Any:
        total, runners = await self.overview.online_runners(RUNNER_LIMIT)
        return {
            "total": total,
            "runners": [
                {
                    "runnerId": r.runner_id,
                    "replica": r.replica,
                    "since": r.since,
                    "lastHeartbeat": r.last_heartbeat,
                    "apps": [short_app(a) for a in r.apps],
                }
                for r in runners
            ],
        }

    async def pairings(self) -> Any:
        _, runners = await self.overview.online_runners(RUNNER_LIMIT)
        pairs = await self.overview.pairings(runners)
        return {
            "pairings": [
                {
                    "app": short_app(p.app_session_id),
                    "runnerId": p.runner_id,
                    "pairedAt": p.paired_at,
                }
                for p in pairs
            ]
        }

    async def replicas(self) -> Any:
        now = int(time.time() * 1000)
        reports = await self.overview.replica_reports()
        return {
            "replicas": [
                {
                    "replicaId": r.replica_id,
                    "status": "up"
                    if now - r.reported_at <= 3 * self.report_interval_ms
                    else "down",
                    "store": r.store,
                    "fanout": r.fanout,
                    "apps": r.apps,
                    "runners": r.runners,
                    "startedAt": r.started_at,
                    "reportedAt": r.reported_at,
                }
                for r in reports
            ]
        }

    async def history_entries(self) -> Any:
        entries = await self.history.recent(HISTORY_LIMIT)
        return {
            "entries": [
                {
                    "id": e.id,
                    "at": e.at,
                    "event": e.event,
                    "runnerId": e.runner_id,
                    "app": short_app(e.app_session_id),
                    "reason": e.reason,
                    "address": e.address,
                }
                for e in entries
            ]
        }
