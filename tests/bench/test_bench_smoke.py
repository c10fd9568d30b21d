"""The benchmark's lean Socket.IO client speaks to a real gateway process (no timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bench.client import LeanClient, new_session
from tests.support.gateways import GatewayProcess


@pytest.fixture
def gateway(redis_url: str) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(redis_url)
    gw.start()
    yield gw
    gw.terminate()


async def test_lean_client_registers_and_heartbeats(gateway: GatewayProcess) -> None:
    async with new_session() as session:
        client = LeanClient()
        await client.connect(session, gateway.url)
        try:
            assert client.sid
            reg = await client.call("runner:register", {"runnerId": "bench-smoke-1"})
            assert reg["success"] is True and reg["runnerId"] == "bench-smoke-1"
            assert isinstance(reg["pairingCode"], str)
            ack = await client.call("runner:heartbeat", {"runnerId": "bench-smoke-1"})
            assert ack == {"success": True}
            wrong = await client.call("runner:heartbeat", {"runnerId": "someone-else"})
            assert wrong["error"] == "NOT_REGISTERED"
        finally:
            await client.close()
        assert not client.connected


async def test_lean_client_relays_with_auth_and_event_handlers(gateway: GatewayProcess) -> None:
    async with new_session() as session:
        runner, app = LeanClient(), LeanClient()
        got: asyncio.Queue[object] = asyncio.Queue()

        async def on_input(msg: dict[str, object]) -> None:
            await runner.emit_with_ack("runner:output", {"data": msg["data"]})

        async def on_output(msg: object) -> None:
            got.put_nowait(msg)

        runner.on("terminal:input", on_input)
        app.on("terminal:output", on_output)
        await runner.connect(session, gateway.url)
        await app.connect(session, gateway.url, auth={"appSessionId": "bench-smoke-app-0001"})
        try:
            reg = await runner.call("runner:register", {"runnerId": "bench-smoke-2"})
            paired = await app.call("app:pair", {"pairingCode": reg["pairingCode"]})
            assert paired["appSessionId"] == "bench-smoke-app-0001"
            assert await app.call("app:command", {"data": "ls"}) == {"success": True}
            out = await asyncio.wait_for(got.get(), 10)
            assert out == {"runnerId": "bench-smoke-2", "data": "ls", "seq": 1}
        finally:
            await app.close()
            await runner.close()
