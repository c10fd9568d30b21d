"""The E2E JavaScript module against gateway processes on a real Redis: a wrong code spends
one guess (the runner refuses and shows a new code), the right one opens a session whose
bytes reach the other side, frames written into a socket that closed before its acks are sent
again and delivered once, a restarted app re-keys from its stored pairing key, and two-way
traffic across a replica SIGKILLed or a frozen network loses and repeats nothing; neither a
typed marker nor its output nor any code's secret reaches Redis (MONITOR) or the gateway's
log."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path

import pytest

from tests.support.freeze_proxy import FreezingProxy
from tests.support.gateways import GatewayProcess
from tests.support.js_e2e import SCENARIO, Lines, RecordedMonitor, node_env, run_e2e_scenario


async def test_js_app_and_runner_through_a_gateway(
    monitored_gateway: GatewayProcess, monitored_redis: RecordedMonitor, e2e_node: str
) -> None:
    gateway = monitored_gateway
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
    # The app the runner refused paired again with the new code (one guess per code).
    assert wrong["runner"]["id"] == wrong["appSessionId"] == steps["paired"]["appSessionId"]
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
    commands = await asyncio.to_thread(monitored_redis.recorded)
    log = await asyncio.to_thread(Path(gateway.log_path).read_bytes)
    for seen in (commands, log):
        assert marker.encode() not in seen
        assert b"after restart" not in seen
        for code in (first, wrong["newCode"]):
            assert code.rsplit("-", 1)[1].encode() not in seen
    # What the gateway does see: the nameplates (so MONITOR did record this run).
    assert first.rsplit("-", 1)[0].encode() in commands


@pytest.mark.parametrize("fault", ["replica SIGKILLed", "app network frozen"])
async def test_two_way_traffic_across_a_fault_loses_and_repeats_nothing(
    fault: str,
    monitored_gateway: GatewayProcess,
    monitored_redis: RecordedMonitor,
    e2e_node: str,
) -> None:
    """Mid-stream, the app's replica is SIGKILLed and replaced (same port), or the app's
    network freezes (no FIN, no RST: the client finds out by its ping timeout): what the
    gateway held is replayed, what the app wrote into the dead connection unacked is sent
    again (about 100 records when frozen, a few when killed, in the runs here), and each end
    gets every message of the other once, in order."""
    app_gateway = GatewayProcess(monitored_gateway.redis_url)
    app_gateway.start()
    proxy = await FreezingProxy(app_gateway.port).start()
    n = 200
    config: dict[str, object] = {
        "scenario": "crash",
        "runnerUrl": monitored_gateway.url,
        "appUrl": proxy.url,
        "runnerId": f"js-fault-{secrets.token_hex(4)}",
        "count": n,
        "intervalMs": 10,
        "timeoutMs": 90000,
    }
    proc = await asyncio.create_subprocess_exec(
        e2e_node,
        str(SCENARIO),
        json.dumps(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node_env(),
    )
    lines = Lines(proc)
    try:
        await lines.until(re.compile(rb'"step":"kill"'), timeout=90)
        if fault == "replica SIGKILLed":
            app_gateway.kill()
            await asyncio.to_thread(app_gateway.start)
        else:
            proxy.freeze()
        found = await lines.until(re.compile(rb'^\{"step":"(crash|error)".*$'), timeout=150)
    finally:
        await lines.stop()
        await proxy.close()
        app_gateway.terminate()
    result = json.loads(found.group(0))
    assert result["step"] == "crash", result
    assert result["atRunner"] == [f"a{i}" for i in range(n)]
    assert result["atApp"] == [f"r{i}" for i in range(n)]
    assert result["disconnects"] >= 1
