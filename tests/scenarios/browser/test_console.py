"""The operator console (GET /console) in headless chromium: a wrong token shows nothing, the
right one shows the online runner, its replica and its pairing, updated live."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Browser

from pairing import keys
from pairing.store import connect
from tests.scenarios.browser.conftest import CONSOLE_TOKEN
from tests.support.browser import PageWatch, pair, wait_js
from tests.support.examples import RunnerProcess
from tests.support.gateways import GatewayProcess
from tests.support.redis_server import RedisProcess

API = ["runners", "pairings", "replicas", "history"]

#: The text of one table's body.
TABLE_JS = "(id) => document.querySelector(`#${id} tbody`).innerText"


async def test_console_shows_the_runner_only_with_the_right_token(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess, tmp_path: Path
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    for name in API:  # the data endpoints, straight
        resp = await context.request.get(f"{web_gateway.url}/console/api/{name}")
        assert resp.status == 401, name
        assert "browser-runner" not in await resp.text()

    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/console")
    token = page.get_by_label("Operator token")
    await token.fill("not-the-token")
    await token.press("Enter")
    await wait_js(
        page, "() => document.getElementById('login-error').textContent.includes('wrong')"
    )
    assert "browser-runner" not in await page.content()
    assert await page.locator("#data").is_hidden()

    await token.fill(CONSOLE_TOKEN)
    await token.press("Enter")
    runners = await wait_js(
        page, f"() => ({TABLE_JS})('runners').includes('browser-runner') && ({TABLE_JS})('runners')"
    )
    assert "none" in runners  # no app paired yet

    # an app pairs in another tab: the console shows it within a few polls
    terminal = await context.new_page()
    await terminal.goto(web_gateway.url + "/")
    await pair(terminal, code)
    pairings = await wait_js(
        page,
        f"() => ({TABLE_JS})('pairings').includes('browser-runner') && ({TABLE_JS})('pairings')",
    )
    app_id = await terminal.evaluate(
        "() => JSON.parse(sessionStorage.getItem('pairing-terminal')).appSessionId"
    )
    assert app_id[:8] in pairings and app_id not in pairings  # shown shortened, never whole
    replicas = await page.evaluate(TABLE_JS, "replicas")
    assert "up" in replicas
    history = await wait_js(
        page, f"() => ({TABLE_JS})('history').includes('paired') && ({TABLE_JS})('history')"
    )
    assert "browser-runner" in history
    await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

    # the only errors: the browser's own log line for each 401 the wrong token met
    assert all("401" in e for e in watch.errors), watch.errors
    assert watch.foreign(web_gateway.url) == []
    await context.close()


async def test_console_renders_stored_text_as_text(
    browser: Browser, redis_proc: RedisProcess, gateway_procs: Callable[..., Any]
) -> None:
    """A report in the store holding markup (whoever wrote it) shows as those characters,
    never as elements: no image, no script ran."""
    gw = gateway_procs(redis_proc.url, {"console": {"token": CONSOLE_TOKEN}})
    evil = '<img src=x id=injected onerror="document.title=1">'
    store = connect(redis_proc.url)
    try:
        now = int(time.time() * 1000)
        report = {
            "replicaId": evil,
            "startedAt": now,
            "reportedAt": now,
            "apps": 0,
            "runners": 0,
            "store": True,
            "fanout": True,
        }
        await store.hset(keys.REPLICAS, evil, json.dumps(report))
        context = await browser.new_context()
        watch = PageWatch()
        page = watch.attach(await context.new_page())
        await page.goto(gw.url + "/console")
        await page.get_by_label("Operator token").fill(CONSOLE_TOKEN)
        await page.get_by_label("Operator token").press("Enter")
        await wait_js(page, f"() => ({TABLE_JS})('replicas').includes('<img')")
        assert await page.locator("#injected").count() == 0
        assert await page.get_by_role("cell", name=evil, exact=True).count() == 1
        assert watch.errors == []
        await context.close()
    finally:
        await store.delete(keys.REPLICAS)
        await store.aclose()
