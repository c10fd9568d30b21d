"""The JavaScript module and the Python client (pairing_client) against each other, through a
gateway process on a real Redis: a Python runner (--exec) runs a JS app's command end to end
encrypted, a JS runner answers a Python app; a wrong secret from either fails against the
other (the app says so, the runner refuses and shows a new code); and neither the command, its
output nor a secret reaches Redis (MONITOR)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.gateways import GatewayProcess
from tests.support.js_e2e import SCENARIO, Lines, RecordedMonitor, node_env, run_e2e_scenario
from tests.support.paths import ROOT

CODE_LINE = re.compile(rb"pairing code: ([0-9A-Z]+-[0-9A-Z]+)")
# The runner computes it: the command's text does not contain it.
COMMAND = "printf 'E2E-%s-MARK\\n' $((123456*7))"
OUTPUT = "E2E-864192-MARK"


@pytest.fixture
async def py_runner(monitored_gateway: GatewayProcess, tmp_path: Path) -> AsyncIterator[Lines]:
    """The Python client's runner, running each input as a shell command."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        "-m",
        "pairing_client",
        "runner",
        "--url",
        monitored_gateway.url,
        "--runner-id",
        f"py-runner-{secrets.token_hex(4)}",
        "--key-file",
        str(tmp_path / "runner.key"),
        "--exec",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines = Lines(proc)
    yield lines
    await lines.stop()


@pytest.fixture
async def js_runner(monitored_gateway: GatewayProcess, e2e_node: str) -> AsyncIterator[Lines]:
    """The JS module's runner (an echo runner): one JSON line per event."""
    config = {
        "scenario": "runner",
        "url": monitored_gateway.url,
        "runnerId": f"js-{secrets.token_hex(4)}",
    }
    proc = await asyncio.create_subprocess_exec(
        e2e_node,
        str(SCENARIO),
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=node_env(),
    )
    lines = Lines(proc)
    yield lines
    await lines.stop()


async def py_app(
    gateway: GatewayProcess, code: str, state: Path, *commands: str
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pairing_client",
        "app",
        "--url",
        gateway.url,
        "--code",
        code,
        "--state-dir",
        str(state),
        "--wait",
        "20",
        *commands,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def assert_unseen(monitor: RecordedMonitor, *texts: str) -> None:
    commands = monitor.recorded()
    assert b"pairing:code:" in commands  # MONITOR recorded this run
    for text in texts:
        assert text.encode() not in commands, text


async def test_js_app_runs_a_command_on_a_python_runner(
    py_runner: Lines,
    monitored_gateway: GatewayProcess,
    monitored_redis: RecordedMonitor,
    e2e_node: str,
) -> None:
    gateway = monitored_gateway
    code = (await py_runner.until(CODE_LINE)).group(1).decode()
    nameplate, secret = code.rsplit("-", 1)
    wrong = f"{nameplate}-{'2222222' if secret != '2222222' else '3333333'}"
    steps = await run_e2e_scenario(e2e_node, {"scenario": "app", "url": gateway.url, "code": wrong})
    assert steps["pair_failed"]["code"] == "WRONG_CODE"
    await py_runner.until(re.compile(rb"wrong code"))
    new_code = (await py_runner.until(CODE_LINE)).group(1).decode()
    assert new_code != code
    steps = await run_e2e_scenario(
        e2e_node,
        {
            "scenario": "app",
            "url": gateway.url,
            "code": new_code,
            "commands": [COMMAND],
            "expect": OUTPUT,
        },
    )
    assert OUTPUT in steps["output"]["text"]
    await py_runner.until(re.compile(rb"end-to-end encrypted session"))
    await asyncio.to_thread(
        assert_unseen, monitored_redis, "864192", "123456*7", secret, new_code.rsplit("-", 1)[1]
    )


async def test_python_app_on_a_js_runner(
    js_runner: Lines,
    monitored_gateway: GatewayProcess,
    monitored_redis: RecordedMonitor,
    tmp_path: Path,
) -> None:
    gateway = monitored_gateway
    code_line = re.compile(rb'"code":"([0-9A-Z]+-[0-9A-Z]+)"')
    code = (await js_runner.until(code_line)).group(1).decode()
    nameplate, secret = code.rsplit("-", 1)
    wrong = f"{nameplate}-{'2222222' if secret != '2222222' else '3333333'}"
    status, out = await py_app(gateway, wrong, tmp_path / "wrong", "ls")
    assert status == 2, out  # the Python app's exit status for a wrong code
    assert "code was wrong" in out
    await js_runner.until(re.compile(rb'"step":"rejected"'))
    new_code = (await js_runner.until(code_line)).group(1).decode()
    assert new_code != code
    marker = f"E2E-{secrets.randbelow(10**9):09d}-MARK"
    status, out = await py_app(gateway, new_code, tmp_path / "right", marker)
    assert status == 0, out
    assert f"echo:{marker}" in out
    await js_runner.until(re.compile(rb'"step":"data".*' + re.escape(marker.encode())))
    await asyncio.to_thread(
        assert_unseen, monitored_redis, marker, secret, new_code.rsplit("-", 1)[1]
    )
