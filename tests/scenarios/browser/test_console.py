"""The operator console (GET /console) in headless chromium: a wrong token shows nothing, the
right one shows the online runner, its replica and its pairing, updated live."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from tests.scenarios.browser.conftest import CONSOLE_TOKEN
from tests.support.browser import PageWatch, pair, wait_js
from tests.support.examples import RunnerProcess
from tests.support.gateways import GatewayProcess

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
