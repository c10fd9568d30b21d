"""Running the E2E JavaScript module (clients/js) from the Python tests.

``clients/js`` pins its dependencies in package-lock.json; ``e2e_node`` installs them with
``npm ci`` when ``clients/js/node_modules`` is missing (once per session) and fails, naming
what to install, when node or npm is not there. ``run_e2e_scenario`` runs
``tests/clients/js/e2e_scenario.mjs`` (JSON lines, one per step) and returns them by step.
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

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "clients" / "js"
SCENARIO = Path(__file__).resolve().parent / "e2e_scenario.mjs"


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} is not installed: the JavaScript client tests need Node.js (>= 20.19) "
            "and npm (Debian: apt-get install nodejs npm)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def e2e_node() -> Iterator[str]:
    """The node binary, with clients/js/node_modules installed from its lockfile."""
    node = need("node")
    if not (PACKAGE / "node_modules" / "@noble" / "curves" / "package.json").exists():
        done = subprocess.run(
            [need("npm"), "ci", "--no-audit", "--no-fund"],
            cwd=PACKAGE,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"npm ci in {PACKAGE} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
                pytrace=False,
            )
    yield node


def node_env() -> dict[str, str]:
    return {**os.environ, "NODE_NO_WARNINGS": "1"}


async def run_e2e_scenario(
    node: str, config: dict[str, Any], timeout: float = 120
) -> dict[str, dict[str, Any]]:
    """Runs one scenario to its end; fails with its output unless it printed ``done``."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCENARIO),
        json.dumps(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node_env(),
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"e2e_scenario.mjs did not finish within {timeout} s") from None
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    steps = {rec.pop("step"): rec for rec in lines}
    detail = "\n".join(json.dumps(r)[:600] for r in lines) + "\n" + stderr.decode()[-3000:]
    assert "error" not in steps, f"scenario failed at {steps['error'].get('at')}:\n{detail}"
    assert "done" in steps, f"exit {proc.returncode}:\n{detail}"
    return steps
