"""Debian's chromium driven by Playwright (never a downloaded browser), and what a test reads
from the pages: window.term's screen, the console errors, the requests.

``.ci/run`` installs chromium with apt; without it the browser tests fail saying so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright

#: Debian's package installs it here.
CHROMIUM = "/usr/bin/chromium"

#: window.term's active buffer, one string per row (scrollback included).
SCREEN_LINES_JS = """() => {
  const b = window.term.buffer.active;
  const out = [];
  for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
  return out;
}"""
#: The same as one text.
SCREEN_JS = "() => (" + SCREEN_LINES_JS + ")().join('\\n')"


def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        pytest.fail(
            "chromium is not installed: the browser tests drive Debian's chromium "
            "(apt-get install chromium; .ci/run installs it)",
            pytrace=False,
        )
    return path


#: A host name for 127.0.0.1 that is not "localhost": pages there are not a secure context,
#: as on a phone reaching a gateway over plain HTTP on a local network.
PLAIN_HTTP_HOST = "pairing-gateway.test"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless chromium, closed at the end; it resolves ``PLAIN_HTTP_HOST`` to 127.0.0.1."""
    path = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=path, args=[f"--host-resolver-rules=MAP {PLAIN_HTTP_HOST} 127.0.0.1"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageWatch:
    """Everything a page logged as an error, and every request it made."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("request", self._request)
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def foreign(self, origin: str) -> list[str]:
        """Requests to any origin but ``origin`` (scheme://host:port), websockets included."""
        want = urlsplit(origin)
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in {"data", "blob"}:
                continue
            scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
            if (scheme, parts.netloc) != (want.scheme, want.netloc):
                out.append(url)
        return out


async def wait_js(page: Page, expression: str, arg: Any = None, timeout: float = 30) -> Any:
    """Poll ``expression`` (a function of ``arg``) until it is truthy; returns its value.

    Polled from the test (page.evaluate), since the page's CSP forbids the eval that
    Playwright's own wait_for_function uses."""
    value: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await page.evaluate(expression, arg)
                if value:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        screen = await page.evaluate(SCREEN_JS) if await has_term(page) else ""
        raise AssertionError(
            f"not true after {timeout} s: {expression}\n(last value {value!r})\nscreen:\n{screen}"
        ) from None


async def has_term(page: Page) -> bool:
    return bool(await page.evaluate("() => Boolean(window.term)"))


async def screen(page: Page) -> str:
    return str(await page.evaluate(SCREEN_JS))


async def wait_screen_line(page: Page, line: str, timeout: float = 30) -> str:
    """Wait until a row of the terminal reads exactly ``line`` (trailing blanks trimmed)."""
    js = "(line) => (" + SCREEN_LINES_JS + ")().some((l) => l.trimEnd() === line)"
    await wait_js(page, js, line, timeout=timeout)
    return await screen(page)


async def pair(page: Page, code: str) -> None:
    """Type the code into the "Pairing code" field, press Enter, wait for the terminal."""
    field_ = page.get_by_label("Pairing code")
    await field_.fill(code)
    await field_.press("Enter")
    await wait_js(page, "() => window.pairingTerminal && window.pairingTerminal.runnerId")
    await wait_js(page, "() => document.activeElement?.classList.contains('xterm-helper-textarea')")
