"""The browser terminal with end-to-end encryption: a code ``NAMEPLATE-SECRET`` typed into
the page pairs with the nameplate only, and every byte then goes as records the gateway
cannot read. The runner is clients/js's RunnerClient under Node (e2e_runner.mjs), answering
each typed line with ``got: <line>``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket

from tests.support.browser import PageWatch, pair, wait_js, wait_screen_line
from tests.support.gateways import GatewayProcess
from tests.support.js_e2e import e2e_node, node_env

__all__ = ["e2e_node"]  # the fixture, used below

RUNNER = Path(__file__).with_name("e2e_runner.mjs")
MARKER = "plain-text-marker-3141"


class NodeRunner:
    """e2e_runner.mjs in its own process; its JSON lines in ``lines``."""

    def __init__(self, node: str, url: str) -> None:
        self.args = [node, str(RUNNER), json.dumps({"url": url, "runnerId": "e2e-runner"})]
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, env=node_env()
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(json.loads(raw))

    async def wait(self, key: str, after: int = 0, timeout: float = 30) -> tuple[Any, int]:
        """The value of the first line at index >= ``after`` that has ``key``, and its index."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(after, len(self.lines)):
                    if key in self.lines[i]:
                        return self.lines[i][key], i
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def e2e_runner(e2e_node: str, web_gateway: GatewayProcess) -> AsyncIterator[NodeRunner]:
    runner = NodeRunner(e2e_node, web_gateway.url)
    await runner.start()
    yield runner
    await runner.stop()


def record_frames(page: Page, sent: list[bytes]) -> None:
    """Every websocket frame the page sends, as bytes."""

    def on_socket(ws: WebSocket) -> None:
        ws.on(
            "framesent",
            lambda payload: sent.append(
                payload if isinstance(payload, bytes) else payload.encode()
            ),
        )

    page.on("websocket", on_socket)


async def test_e2e_code_pairs_and_nothing_readable_reaches_the_gateway(
    browser: Browser, web_gateway: GatewayProcess, e2e_runner: NodeRunner
) -> None:
    code, _ = await e2e_runner.wait("code")
    nameplate, secret = code.rsplit("-", 1)
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    sent: list[bytes] = []
    record_frames(page, sent)
    await page.goto(web_gateway.url + "/")
    await pair(page, code.lower())  # codes are case-insensitive
    assert await page.evaluate("() => window.pairingTerminal.e2e") is True
    await wait_js(page, "() => window.pairingTerminal.state.endsWith('(end-to-end encrypted)')")

    await page.keyboard.type(f"{MARKER}\n")
    await wait_screen_line(page, f"got: {MARKER}")
    line, _ = await e2e_runner.wait("line")
    assert line == MARKER
    cols, rows = await page.evaluate("() => [term.cols, term.rows]")
    size, _ = await e2e_runner.wait("resize")
    assert size == [cols, rows]  # the window size went too, as a record

    everything = b"".join(sent)
    assert nameplate.encode() in everything  # app:pair carried the nameplate...
    assert secret.encode() not in everything and secret.lower().encode() not in everything
    assert MARKER.encode() not in everything  # ...and no keystroke in the clear
    assert watch.errors == []
    await context.close()


async def test_e2e_wrong_secret_is_refused(
    browser: Browser, web_gateway: GatewayProcess, e2e_runner: NodeRunner
) -> None:
    code, index = await e2e_runner.wait("code")
    nameplate, secret = code.rsplit("-", 1)
    wrong = ("2" if secret[0] != "2" else "3") + secret[1:]
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    field = page.get_by_label("Pairing code")
    await field.fill(f"{nameplate}-{wrong}")
    await field.press("Enter")
    await wait_js(
        page, "() => document.getElementById('pair-error').textContent.includes('Wrong code')"
    )
    assert await field.is_visible()
    # the runner burnt that code and shows a new one, which works
    new_code, _ = await e2e_runner.wait("code", after=index + 1)
    assert new_code != code
    await pair(page, new_code)
    await page.keyboard.type("again\n")
    await wait_screen_line(page, "got: again")
    assert watch.errors == []
    await context.close()


async def test_e2e_offline_mid_output_loses_and_repeats_nothing(
    browser: Browser, web_gateway: GatewayProcess, e2e_runner: NodeRunner
) -> None:
    """3 s offline while encrypted output streams and a line is typed: afterwards every
    output line once, in order, and the typed line reached the runner (resent records)."""
    code, _ = await e2e_runner.wait("code")
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    await page.keyboard.type("count\n")
    await wait_screen_line(page, "n-3")
    connects = await page.evaluate("() => window.pairingTerminal.connects")
    await context.set_offline(True)
    await wait_js(page, "() => window.pairingTerminal.state.startsWith('Offline')")
    await page.keyboard.type("typed-offline\n")
    await page.wait_for_timeout(3000)
    await context.set_offline(False)
    text = await wait_screen_line(page, "n-40", timeout=60)
    await wait_screen_line(page, "got: typed-offline")
    lines = [line.strip() for line in text.splitlines() if line.startswith("n-")]
    assert lines == [f"n-{i}" for i in range(1, 41)]
    assert await page.evaluate("() => window.pairingTerminal.connects") > connects
    assert [line["line"] for line in e2e_runner.lines if "line" in line] == [
        "count",
        "typed-offline",
    ]
    assert watch.errors == []
    await context.close()


async def test_e2e_reload_rekeys_without_the_code(
    browser: Browser, web_gateway: GatewayProcess, e2e_runner: NodeRunner
) -> None:
    """A reload re-keys from the pairing key the tab kept (the runner's own copy), without
    the code; frames held from the first handshake are not replayed into the new one."""
    code, _ = await e2e_runner.wait("code")
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    watch = PageWatch()
    page = watch.attach(await context.new_page())
    await page.goto(web_gateway.url + "/")
    await pair(page, code)
    await page.keyboard.type("before\n")
    await wait_screen_line(page, "got: before")
    _, sessions = await e2e_runner.wait("session")
    await page.reload()
    await wait_js(page, "() => window.pairingTerminal.state.endsWith('(end-to-end encrypted)')")
    await e2e_runner.wait("session", after=sessions + 1)  # the runner's side of the re-key
    await page.locator(".xterm-helper-textarea").focus()
    await page.keyboard.type("after\n")
    await wait_screen_line(page, "got: after")
    assert not [line for line in e2e_runner.lines if "rejected" in line or "error" in line]
    assert watch.errors == []
    await context.close()
