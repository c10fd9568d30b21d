"""Fixtures of the browser scenarios: headless chromium, a gateway process on memory:// with
the console on, and examples/runner.py giving each paired app a shell in a pty."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser

from tests.support.browser import chromium
from tests.support.examples import RunnerProcess
from tests.support.gateways import GatewayProcess

#: The operator token of the test gateway's console.
CONSOLE_TOKEN = "console-token-for-the-browser-tests-0123"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def web_gateway() -> Iterator[GatewayProcess]:
    """``python -m gateway`` on memory://, console on (reports every 0.5 s)."""
    gw = GatewayProcess(
        "memory://", {"console": {"token": CONSOLE_TOKEN, "report_interval_s": 0.5}}
    )
    gw.start()
    yield gw
    gw.terminate(timeout=10)
    print("--- gateway log (tail) ---\n" + "\n".join(gw.log().splitlines()[-30:]))


@pytest.fixture
async def pty_runner(web_gateway: GatewayProcess) -> AsyncIterator[RunnerProcess]:
    """examples/runner.py --pty with a plain bash (prompt ``bash-N.N# `` or ``$ ``)."""
    runner = RunnerProcess(
        web_gateway.url, "browser-runner", "--pty", "--shell", "bash --norc --noprofile"
    )
    await runner.start()
    yield runner
    await runner.stop()
