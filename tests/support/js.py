"""Run the official JavaScript client (socket.io-client under Node) from the Python tests.

``tests/clients/js/`` pins socket.io-client in package-lock.json; ``node_deps`` installs it with
``npm ci`` when ``tests/clients/js/node_modules`` is missing (once per session), and fails with a
clear message when node or npm is not installed (``make test`` installs both). The scenario
script prints JSON lines; ``run_scenario`` collects them by step and ``check_scenario``
asserts what every step must have seen.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT

JS_DIR = ROOT / "tests" / "clients" / "js"
SCENARIO = JS_DIR / "scenario.mjs"

#: Transport settings proven: websocket only, long-polling then upgrade, long-polling only.
TRANSPORTS: dict[str, dict[str, Any]] = {
    "websocket": {"transports": ["websocket"], "initial": "websocket", "final": "websocket"},
    "polling+upgrade": {
        "transports": ["polling", "websocket"],
        "initial": "polling",
        "final": "websocket",
    },
    "polling": {
        "transports": ["polling"],
        "upgrade": False,
        "initial": "polling",
        "final": "polling",
    },
}


def need(binary: str) -> str:
    """The path of ``binary``; fails the test, naming it, when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} is not installed: the tests need Node.js, npm and redis-tools (make test "
            "installs Debian's packages when missing: scripts/test-deps)",
            pytrace=False,
        )
    return path


def npm_installed(directory: Path, marker: str, timeout: float = 600) -> str:
    """The node binary, once ``directory/node_modules`` is installed from its lockfile
    (``npm ci``, unless ``node_modules/<marker>`` is already there)."""
    node = need("node")
    if not (directory / "node_modules" / marker).exists():
        done = subprocess.run(
            [need("npm"), "ci", "--no-audit", "--no-fund"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"npm ci in {directory} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                pytrace=False,
            )
    return node


@pytest.fixture(scope="session")
def node_deps() -> Iterator[str]:
    """The node binary, with tests/clients/js/node_modules installed from the lockfile."""
    yield npm_installed(JS_DIR, "socket.io-client/package.json")


async def run_scenario(
    node: str, config: dict[str, Any], timeout: float = 60, *, expect_error: bool = False
) -> dict[str, Any]:
    """Run scenario.mjs with ``config``; returns {step: record}. Fails on any error, or
    with ``expect_error`` unless the scenario stopped at an error (``steps["error"]``)."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCENARIO),
        json.dumps(config),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"scenario.mjs did not finish within {timeout} s") from None
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    steps = {rec.pop("step"): rec for rec in lines}
    detail = "\n".join(json.dumps(r)[:400] for r in lines) + "\n" + stderr.decode()[-2000:]
    if expect_error:
        assert "error" in steps and proc.returncode == 1, f"expected a failure:\n{detail}"
        return steps
    assert "error" not in steps, f"scenario failed at {steps['error'].get('at')}:\n{detail}"
    assert proc.returncode == 0 and "done" in steps, f"exit {proc.returncode}:\n{detail}"
    return steps


def check_scenario(
    steps: dict[str, Any], *, runner_id: str, app_id: str, transport: dict[str, Any]
) -> None:
    """What the official client must have seen at every step of the pairing scenario."""
    assert steps["versions"]["socket.io-client"].startswith("4.")
    for who in ("runner_connected", "app_connected", "resumed_connected"):
        assert steps[who]["initialTransport"] == transport["initial"], (who, steps[who])
        assert steps[who]["transport"] == transport["final"], (who, steps[who])

    reg = steps["register"]["ack"]
    assert reg["success"] is True and reg["runnerId"] == runner_id
    assert isinstance(reg["pairingCode"], str) and len(reg["pairingCode"]) >= 4
    assert reg["heartbeatIntervalMs"] == 500  # TEST_CONFIG heartbeat.interval_s

    assert steps["pair_bad_code"]["ack"]["error"] == "INVALID_CODE"
    assert steps["pair"]["ack"] == {"success": True, "runnerId": runner_id, "appSessionId": app_id}
    assert steps["runner_paired"]["data"] == {"appSessionId": app_id}

    assert steps["command"]["ack"] == {"success": True}
    # seq: per appSessionId and direction, 1, 2, 3, ... across re-pairing and reconnects.
    assert steps["runner_input"]["data"] == {"appSessionId": app_id, "data": "uname -a", "seq": 1}
    assert steps["output"]["ack"] == {"success": True, "delivered": 1}
    assert steps["app_output"]["data"] == {
        "runnerId": runner_id,
        "data": "ran: uname -a",
        "seq": 1,
    }

    burst = steps["burst"]
    assert burst["inputs"] == burst["sent"], "terminal:input out of order or lost"
    assert burst["outputs"] == [f"out {s}" for s in burst["sent"]], "terminal:output order"
    assert burst["commandAcks"] == [{"success": True}] * len(burst["sent"])
    assert burst["outputAcks"] == [{"success": True, "delivered": 1}] * len(burst["sent"])

    assert steps["status_paired"]["ack"] == {
        "success": True,
        "paired": True,
        "runnerId": runner_id,
        "runnerOnline": True,
    }
    assert steps["unpair"]["ack"] == {"success": True}
    assert steps["runner_app_unpaired"]["data"] == {"appSessionId": app_id}
    assert steps["status_unpaired"]["ack"]["paired"] is False
    assert steps["status_unpaired"]["ack"]["runnerId"] is None
    assert steps["command_unpaired"]["ack"]["error"] == "NOT_PAIRED"

    reg2 = steps["register_again"]["ack"]
    assert reg2["success"] is True and reg2["pairingCode"] != reg["pairingCode"]
    assert steps["pair_again"]["ack"]["success"] is True
    assert steps["runner_paired_again"]["data"] == {"appSessionId": app_id}

    assert steps["status_resumed"]["ack"] == {
        "success": True,
        "paired": True,
        "runnerId": runner_id,
        "runnerOnline": True,
    }
    assert steps["resumed_command"]["ack"] == {"success": True}
    seq = 2 + len(burst["sent"])  # after "uname -a" and the burst
    assert steps["resumed_input"]["data"] == {"appSessionId": app_id, "data": "whoami", "seq": seq}
    assert steps["resumed_output"]["data"] == {
        "runnerId": runner_id,
        "data": "ran: whoami",
        "seq": seq,
    }

    assert steps["heartbeats"]["errors"] == []
    assert steps["unpaired"]["data"] == {"runnerId": runner_id, "reason": "RUNNER_DISCONNECTED"}
    assert steps["status_after_runner_gone"]["ack"]["paired"] is False
    assert steps["leftovers"] == {"unpaired": 0, "output": 0, "input": 0}
