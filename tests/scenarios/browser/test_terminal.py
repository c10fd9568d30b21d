"""The browser terminal (GET /) in headless chromium, on examples/runner.py --pty.

Pairs with the code the runner printed, runs commands in its shell through window.term,
follows the viewport's size into the pty, survives 3 s offline without losing or repeating a
line, and on a phone-sized touch viewport the keys bar's Control interrupts a command.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, Response

from tests.scenarios.browser.conftest import start_pty_runner
from tests.support.browser import (
    PLAIN_HTTP_HOST,
    SCREEN_LINES_JS,
    PageWatch,
    pair,
    wait_js,
    wait_screen_line,
)
from tests.support.examples import RunnerProcess
from tests.support.gateways import GatewayProcess

KEY_NAMES = [
    "Escape",
    "Tab",
    "Control",
    "Alt",
    "Arrow up",
    "Arrow down",
    "Arrow left",
    "Arrow right",
]


def script_src(csp: str) -> list[str]:
    for directive in csp.split(";"):
        parts = directive.split()
        if parts and parts[0] == "script-src":
            return parts[1:]
    return []


async def test_pair_and_run_a_command(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess, tmp_path: Path
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    documents: list[Response] = []
    page.on("response", lambda r: documents.append(r) if urlsplit(r.url).path == "/" else None)

    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    await page.keyboard.type("echo $((6*7))\n")
    text = await wait_screen_line(page, "42")
    assert "echo $((6*7))" in text  # the shell echoed what was typed, then ran it
    state = await page.evaluate("() => window.pairingTerminal")
    assert state["runnerId"] == "browser-runner"
    assert state["renderer"] in {"webgl", "dom"}
    # a runner that encrypts shows NAMEPLATE-SECRET (the gateway's own codes have no '-')
    assert state["e2e"] is ("-" in code)
    status = await page.get_by_role("status").inner_text()
    assert status.startswith("Connected to runner browser-runner")
    await page.screenshot(path=str(tmp_path / "desktop.png"))

    assert documents, "the page's own response was not seen"
    for response in documents:
        csp = (await response.all_headers())["content-security-policy"]
        assert script_src(csp) == ["'self'"], csp
        assert "'unsafe-inline'" not in script_src(csp)
    assert watch.foreign(web_gateway.url) == []
    assert watch.errors == []
    await context.close()


async def test_stty_size_follows_the_viewport(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    sizes = []
    for viewport in [None, {"width": 640, "height": 420}, {"width": 1280, "height": 900}]:
        if viewport is not None:
            before = await page.evaluate("() => [term.cols, term.rows]")
            await page.set_viewport_size(viewport)
            await wait_js(
                page, "(before) => term.cols !== before[0] && term.rows !== before[1]", before
            )
        cols, rows = await page.evaluate("() => [term.cols, term.rows]")
        sizes.append((cols, rows))
        await page.keyboard.type("echo size=$(stty size)\n")
        await wait_screen_line(page, f"size={rows} {cols}")
    assert len(set(sizes)) == 3
    assert watch.errors == []
    await context.close()


async def test_three_seconds_offline_lose_and_repeat_nothing(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    await page.keyboard.type("for i in $(seq 1 60); do echo line-$i; sleep 0.1; done\n")
    await wait_screen_line(page, "line-5")
    connects = await page.evaluate("() => window.pairingTerminal.connects")

    await context.set_offline(True)
    await wait_js(page, "() => window.pairingTerminal.state.startsWith('Offline')")
    await page.wait_for_timeout(3000)  # the scenario: 3 s without a network, output running
    await context.set_offline(False)

    text = await wait_screen_line(page, "line-60", timeout=60)
    lines = [line.strip() for line in text.splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 61)]
    # the connection was really lost and made again (a resume, not a link that survived)
    assert await page.evaluate("() => window.pairingTerminal.connects") > connects
    assert watch.errors == []
    await context.close()


async def test_phone_keys_bar_control_c_interrupts(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess, tmp_path: Path
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(
        viewport={"width": 390, "height": 844},
        has_touch=True,
        is_mobile=True,
        device_scale_factor=2,
    )
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    field = page.get_by_label("Pairing code")
    # 16 px: no zoom on focus in mobile Safari; typed like a code, not corrected like prose
    assert await field.evaluate("(e) => getComputedStyle(e).fontSize") == "16px"
    assert await field.get_attribute("autocomplete") == "off"
    assert await field.get_attribute("autocapitalize") == "characters"
    await page.screenshot(path=str(tmp_path / "phone-form.png"))
    await field.tap()
    await pair(page, code)

    keys = page.get_by_role("navigation", name="Special keys")
    assert await keys.is_visible()
    for name in KEY_NAMES:
        assert await keys.get_by_role("button", name=name, exact=True).count() == 1, name
    control = keys.get_by_role("button", name="Control", exact=True)

    await page.keyboard.type("sleep 30; echo finished-sleep\n")
    await wait_js(page, "() => window.pairingTerminal.lastSeq > 0")
    await page.wait_for_timeout(500)  # let the shell start sleep
    await control.tap()
    assert await control.get_attribute("aria-pressed") == "true"
    await page.keyboard.type("c")
    assert await control.get_attribute("aria-pressed") == "false"  # sticky for one key
    await wait_js(page, "() => (" + SCREEN_LINES_JS + ")().some((l) => l.startsWith('^C'))")
    await page.keyboard.type("echo after-$((2+3))\n")
    text = await wait_screen_line(page, "after-5", timeout=20)  # well before sleep's 30 s
    assert "finished-sleep" not in text.replace("echo finished-sleep", "")

    # Arrow up brings the last command back
    await keys.get_by_role("button", name="Arrow up", exact=True).tap()
    await page.keyboard.press("Enter")
    await wait_js(
        page,
        "() => (" + SCREEN_LINES_JS + ")().filter((l) => l.trimEnd() === 'after-5').length === 2",
    )
    await page.screenshot(path=str(tmp_path / "phone-terminal.png"))
    assert watch.errors == []
    await context.close()


async def test_a_reload_resumes_the_pairing(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess
) -> None:
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    await page.keyboard.type("export MARK=kept-$((5*5)); echo set-$MARK\n")
    await wait_screen_line(page, "set-kept-25")
    await page.reload()
    await wait_js(
        page, "() => window.pairingTerminal.state.startsWith('Connected to runner browser-runner')"
    )
    assert await page.get_by_label("Pairing code").is_hidden()
    await page.locator(".xterm-helper-textarea").focus()
    await page.keyboard.type("echo $MARK\n")
    await wait_screen_line(page, "kept-25")  # the same shell
    assert watch.errors == []
    await context.close()


async def test_copy_and_paste_on_plain_http(
    browser: Browser, web_gateway: GatewayProcess, pty_runner: RunnerProcess
) -> None:
    """Over plain HTTP (not a secure context: no Clipboard API) Ctrl+Shift+C copies the
    selection and Ctrl+Shift+V pastes it into the shell, with no console error."""
    code, _ = await pty_runner.next_code()
    context = await browser.new_context(viewport={"width": 1000, "height": 600})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    url = web_gateway.url.replace("127.0.0.1", PLAIN_HTTP_HOST)
    await page.goto(url + "/")
    assert await page.evaluate("() => window.isSecureContext") is False
    assert await page.locator("#paste").is_hidden()  # no Clipboard API to read with
    await pair(page, code)
    await page.keyboard.type("echo copy-me-$((2*3))\n")
    await wait_screen_line(page, "copy-me-6")
    row = await page.evaluate(
        "() => (" + SCREEN_LINES_JS + ")().findIndex((l) => l.trimEnd() === 'copy-me-6')"
    )
    await page.evaluate("(row) => term.select(0, row, 9)", row)
    await page.keyboard.press("Control+Shift+C")
    await page.evaluate("() => term.clearSelection()")
    await page.keyboard.type("echo pasted:")
    await page.keyboard.press("Control+Shift+V")
    await page.keyboard.press("Enter")
    await wait_screen_line(page, "pasted:copy-me-6")
    assert watch.errors == []
    assert watch.foreign(url) == []
    await context.close()


async def test_connection_state_in_words_while_the_gateway_is_away(
    browser: Browser, own_web_gateway: GatewayProcess
) -> None:
    """The state line counts the attempts while the gateway is down; once it is back (a new
    memory:// store that forgot the pairing) the page says so and asks for a code again."""
    web_gateway = own_web_gateway
    pty_runner = await start_pty_runner(web_gateway.url)
    try:
        code, _ = await pty_runner.next_code()
        context = await browser.new_context(viewport={"width": 1000, "height": 600})
        page = await context.new_page()
        await page.goto(web_gateway.url + "/")
        await pair(page, code)
        status = page.get_by_role("status")
        web_gateway.terminate()
        await wait_js(
            page, "() => /^Reconnecting\\.\\.\\., attempt [2-9]/.test(window.pairingTerminal.state)"
        )
        assert (await status.inner_text()).startswith("Reconnecting..., attempt ")
        web_gateway.start()
        await wait_js(
            page,
            "() => document.getElementById('pair-error').textContent.includes('no longer knows')",
        )
        assert await page.get_by_label("Pairing code").is_visible()
        await context.close()
    finally:
        await pty_runner.stop()
