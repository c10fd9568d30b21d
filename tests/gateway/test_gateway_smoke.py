from tests.support.gateways import RunningGateway

APP_ID = "app-0123456789abcdef"


async def test_pair_relay_unpair(start_gateway, clients) -> None:
    gw: RunningGateway = await start_gateway()
    runner = await clients(gw.url)
    app = await clients(gw.url, auth={"appSessionId": APP_ID})
    reg = await runner.call("runner:register", {"runnerId": "r1"})
    assert reg["success"] is True
    ack = await app.call("app:pair", {"pairingCode": reg["pairingCode"]})
    assert ack == {"success": True, "runnerId": "r1", "appSessionId": APP_ID}
    assert await runner.next("pairing:paired") == {"appSessionId": APP_ID}
    assert await app.call("app:command", {"data": "ls"}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": APP_ID, "data": "ls"}
