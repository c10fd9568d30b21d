"""The E2E JavaScript module against a gateway process on a real Redis: a wrong code spends
one guess (the runner refuses and shows a new code), the right one opens a session whose
bytes reach the other side, frames written into a socket that closed before its acks are sent
again and delivered once, a restarted app re-keys from its stored pairing key; and neither a
typed marker nor its output nor any code's secret reaches Redis (MONITOR) or the gateway's
log."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients.js.e2e_support import e2e_node, run_e2e_scenario
from tests.gw_helpers import GatewayProcess
from tests.redis_proc import RedisProcess

__all__ = ["e2e_node"]  # the session fixture, imported so that pytest finds it here


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def monitor(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Path]:
    """Every command the gateway sends to Redis, as redis-cli MONITOR prints it."""
    out = tmp_path / "monitor.txt"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            ["redis-cli", "-p", str(redis_server.port), "monitor"], stdout=fh, stderr=fh
        )
    deadline = time.monotonic() + 10
    while b"OK" not in out.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_bytes()
        time.sleep(0.05)
    yield out
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def gateway(redis_server: RedisProcess, monitor: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(redis_server.url)
    gw.start()
    yield gw
    gw.terminate()


async def test_js_app_and_runner_through_a_gateway(
    gateway: GatewayProcess, monitor: Path, e2e_node: str
) -> None:
    marker = f"E2E-{secrets.randbelow(10**9):09d}-MARK"
    steps = await run_e2e_scenario(
        e2e_node,
        {
            "scenario": "both",
            "url": gateway.url,
            "runnerId": f"js-runner-{secrets.token_hex(4)}",
            "marker": marker,
            "burst": 60,
        },
    )
    first = steps["code"]["code"]
    wrong = steps["wrong_code"]
    assert wrong["appError"] == "WRONG_CODE"
    assert "wrong code" in wrong["runner"]["message"]
    assert wrong["newCode"] != first
    assert steps["paired"]["appKeyId"] == steps["paired"]["runner"]["keyId"]
    assert steps["exchange"]["got"] == [f"echo:{marker}"]
    resend = steps["resend"]
    assert resend["got"] == [f"echo:k{i}" for i in range(60)]
    # All 60 were unacked when the transport closed: all sent again; the runner dropped by
    # counter every copy it already had (each typed once, in order, as checked above).
    assert resend["resent"] >= 60
    assert 0 <= resend["duplicates"] <= resend["resent"]
    assert steps["rekey"]["got"] == ["echo:after restart"]
    assert steps["rekey"]["sameKeyId"] is False

    assert gateway.proc is not None and gateway.proc.poll() is None
    commands = await asyncio.to_thread(monitor.read_bytes)
    log = await asyncio.to_thread(Path(gateway.log_path).read_bytes)
    for seen in (commands, log):
        assert marker.encode() not in seen
        assert b"after restart" not in seen
        for code in (first, wrong["newCode"]):
            assert code.rsplit("-", 1)[1].encode() not in seen
    # What the gateway does see: the nameplates (so MONITOR did record this run).
    assert first.rsplit("-", 1)[0].encode() in commands
