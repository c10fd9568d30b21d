"""The official client resumes as docs/protocol.md shows: ``auth`` as a function.

socket.io-client reconnects by itself after its transport is cut, calling the ``auth``
function again; the app presents the newest ``lastSeq`` and gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from tests.support.freeze_proxy import FreezingProxy
from tests.support.js import JS_DIR, node_deps
from tests.support.replicas import register

__all__ = ["node_deps"]  # the session fixture, imported so that pytest finds it here

APP = "js-resume-app-0123456789"
#: The runner here never heartbeats: give it a timeout longer than the test, so that a slow
#: Node start on a loaded machine does not turn it offline (and sweep its pairing) mid-test.
PATIENT = {"heartbeat": {"timeout_s": 120, "ttl_s": 240}}


class Lines:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def until(self, event: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                assert line, "resume.mjs ended early"
                rec = json.loads(line)
                assert rec["event"] != "error", rec
                if rec["event"] == event and all(rec.get(k) == v for k, v in match.items()):
                    return rec  # type: ignore[no-any-return]

        return await asyncio.wait_for(read(), timeout)


async def test_official_client_resumes_with_auth_as_a_function(
    node_deps: str, start_gateway: Callable[..., Any], clients: Callable[..., Any]
) -> None:
    gw = await start_gateway(PATIENT)
    proxy = await FreezingProxy(gw.server.port).start()
    runner = await clients(gw.url)
    code = (await register(runner, "r-js-resume"))["pairingCode"]
    config = {"url": proxy.url, "appSessionId": APP, "pairingCode": code, "total": 30}
    proc = await asyncio.create_subprocess_exec(
        node_deps,
        str(JS_DIR / "resume.mjs"),
        json.dumps(config),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines = Lines(proc)
    try:
        assert (await lines.until("paired"))["ack"]["success"] is True
        await runner.next("pairing:paired")

        async def stream(first: int, last: int) -> None:
            for i in range(first, last + 1):
                ack = await runner.call("runner:output", {"data": f"o{i}"})
                assert ack == {"success": True, "delivered": 1}

        await stream(1, 10)
        await lines.until("output", seq=10)
        proxy.freeze()  # the network goes; what is sent now never arrives
        await stream(11, 20)
        proxy.cut()  # the client notices, and reconnects with lastSeq from its auth function
        assert (await lines.until("connect", n=2))["lastSeq"] == 10
        await stream(21, 30)
        done = await lines.until("done")
        assert done["seqs"] == list(range(1, 31))
        assert done["duplicates"] == 0 and done["connects"] == 2
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await proxy.close()
