"""The web routes of one in-process gateway: pages, bundles, headers, the console's 404/401/429."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import load_settings
from gateway.web.console import FAILURES, short_app, token_matches

TOKEN = "operator-token-0123456789abcdef"
API = [
    "/console/api/runners",
    "/console/api/pairings",
    "/console/api/replicas",
    "/console/api/history",
]
_stores = itertools.count()

Make = Callable[..., Any]


@pytest.fixture
async def gateway(aiohttp_client: Any) -> AsyncIterator[Make]:
    async def make(token: str | None = TOKEN) -> TestClient:
        settings = load_settings(
            env={},
            overrides={
                "redis_url": f"memory://web-{next(_stores)}",
                "console.token": token,
                "console.report_interval_s": 0.2,
            },
        )
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    yield make


def script_sources(csp: str) -> list[str]:
    directives = dict(
        (d.split()[0], d.split()[1:]) for d in (p.strip() for p in csp.split(";")) if d
    )
    return directives.get("script-src", directives.get("default-src", []))


def assert_secure(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    sources = script_sources(csp)
    assert sources == ["'self'"], csp  # no 'unsafe-inline', no 'unsafe-eval', no other origin
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


async def test_terminal_page_names_its_bundles_and_has_no_inline_script(gateway: Make) -> None:
    client = await gateway()
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert_secure(resp.headers)
    html = await resp.text()
    assert '<label for="code">Pairing code</label>' in html
    # every <script> has a src on this origin; no inline code, no event-handler attributes
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/assets/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html)
    assert "http://" not in html and "https://" not in html
    for name in ["Escape", "Tab", "Control", "Alt", "Arrow up", "Arrow down", "Arrow left",
                 "Arrow right"]:  # fmt: skip
        assert f'aria-label="{name}"' in html
    viewport = re.search(r'<meta name="viewport" content="([^"]*)"', html)
    assert viewport is not None
    assert "user-scalable" not in viewport.group(1) and "maximum-scale" not in viewport.group(1)


async def test_bundles_are_immutable_compressed_and_revalidated_by_etag(gateway: Make) -> None:
    client = await gateway()
    html = await (await client.get("/")).text()
    paths = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert {p.rsplit(".", 1)[1] for p in paths} == {"js", "css"}
    for path in paths:
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        assert plain.status == 200
        assert plain.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert_secure(plain.headers)
        body = await plain.read()
        packed = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert packed.headers["Content-Encoding"] == "gzip"
        raw = await packed.read()
        assert len(raw) < len(body) and gzip.decompress(raw) == body
        assert packed.headers["ETag"] != plain.headers["ETag"]  # other bytes, other tag
        for response, encoding in [(plain, "identity"), (packed, "gzip")]:
            again = await client.get(
                path,
                headers={"If-None-Match": response.headers["ETag"], "Accept-Encoding": encoding},
            )
            assert again.status == 304
    missing = await client.get("/assets/terminal-NOSUCH.js")
    assert missing.status == 404


async def test_icon_is_served_so_browsers_log_no_error(gateway: Make) -> None:
    client = await gateway()
    for path in ["/favicon.ico", "/favicon.svg"]:
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/svg+xml"
        assert (await resp.read()).startswith(b"<svg")


async def test_console_is_off_without_a_token(gateway: Make) -> None:
    client = await gateway(token=None)
    assert (await client.get("/console")).status == 404
    for path in API:
        resp = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 404, path
    assert (await client.get("/")).status == 200  # the terminal is always there


async def test_console_page_and_endpoints_need_the_token(gateway: Make) -> None:
    client = await gateway()
    page = await client.get("/console")
    assert page.status == 200
    assert_secure(page.headers)
    assert '<label for="token">Operator token</label>' in await page.text()
    attempts = [{}, {"Authorization": "Bearer wrong"}]
    for path in API:
        for headers in attempts:
            resp = await client.get(path, headers=headers)
            assert resp.status == 401, (path, headers)
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"] == "UNAUTHORIZED"
    assert len(API) * len(attempts) == 8 < FAILURES
    for path in API[:2]:  # the token without its scheme is not it either
        assert (await client.get(path, headers={"Authorization": TOKEN})).status == 401
    # 10 wrong attempts: past the limit even the right token waits for the window
    limited = await client.get(API[0], headers={"Authorization": f"Bearer {TOKEN}"})
    assert limited.status == 429


async def test_wrong_tokens_are_limited_per_address(gateway: Make) -> None:
    client = await gateway()
    ok = await client.get(API[0], headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    for _ in range(FAILURES):
        resp = await client.get(API[0], headers={"Authorization": "Bearer nope"})
        assert resp.status == 401
    resp = await client.get(API[0], headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"


async def test_console_data_shows_the_replica_and_hides_app_ids(gateway: Make) -> None:
    client = await gateway()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with asyncio.timeout(20):  # the reporter's first report, written at start-up
        while True:
            resp = await client.get("/console/api/replicas", headers=auth)
            assert resp.status == 200
            body = await resp.json()
            if body["replicas"]:
                break
            await asyncio.sleep(0.05)
    assert len(body["replicas"]) == 1
    replica = body["replicas"][0]
    assert replica["status"] == "up" and replica["store"] is True
    for path in API:
        assert (await client.get(path, headers=auth)).status == 200
    assert short_app("abcdefghijklmnopqrstuvwxyz") == "abcdefgh..."


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("", TOKEN)
