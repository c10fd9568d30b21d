"""Fixtures of the browser scenarios: headless chromium, a gateway process on memory:// with
the console on, and examples/runner.py giving each paired app a shell in a pty."""

from __future__ import annotations

import shutil
import tempfile
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


def _gateway() -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        "memory://", {"console": {"token": CONSOLE_TOKEN, "report_interval_s": 0.5}}
    )
    gw.start()
    yield gw
    gw.terminate(timeout=10)
    print("--- gateway log (tail) ---\n" + "\n".join(gw.log().splitlines()[-30:]))


@pytest.fixture(scope="module")
def web_gateway() -> Iterator[GatewayProcess]:
    """``python -m gateway`` on memory://, console on (reports every 0.5 s); one per module,
    each test with its own runner and browser context."""
    yield from _gateway()


@pytest.fixture
def own_web_gateway() -> Iterator[GatewayProcess]:
    """The same, for a test that stops and restarts it."""
    yield from _gateway()


@pytest.fixture(scope="module")
def runner_state() -> Iterator[str]:
    """The runners' key folder, kept for the module: each test's runner registers
    ``browser-runner`` with the key the first one bound."""
    path = tempfile.mkdtemp(prefix="browser-runner-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def start_pty_runner(url: str, state_dir: str | None = None) -> RunnerProcess:
    """examples/runner.py --pty with a plain bash (prompt ``bash-N.N# ``)."""
    runner = RunnerProcess(url, "browser-runner", "--pty", "--shell", "bash --norc --noprofile")
    if state_dir is not None:
        runner.state_dir = state_dir
    await runner.start()
    return runner


@pytest.fixture
async def pty_runner(
    web_gateway: GatewayProcess, runner_state: str
) -> AsyncIterator[RunnerProcess]:
    runner = await start_pty_runner(web_gateway.url, runner_state)
    yield runner
    await runner.stop()
