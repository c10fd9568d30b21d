"""App events of the contract against one in-process replica, with real clients.

Connecting (auth.appSessionId), app:pair (and its rate limits), app:unpair, app:status,
app:command.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import socketio

from pairing import keys
from tests.support.events import (
    APP_ID_RE,
    SLOW_HEARTBEAT,
    app_id,
    assert_error,
    emit_many,
    pair,
    quiet,
    register,
    stale_heartbeat,
    wait_until,
)
from tests.support.gateways import Client, merged


def cfg(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return merged(SLOW_HEARTBEAT, extra or {})


UNPAIRED_STATUS = {"success": True, "paired": False, "runnerId": None, "runnerOnline": False}


@pytest.fixture
async def xff_clients():
    """Connected clients that send an X-Forwarded-For header."""
    made: list[Client] = []

    async def make(url: str, forwarded_for: str, *, auth: Any = None) -> Client:
        client = Client(reconnection=False)
        made.append(client)
        return await client.connect(url, auth=auth, headers={"X-Forwarded-For": forwarded_for})

    yield make
    for client in made:
        await client.close()


# -- connecting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        {"appSessionId": "a" * 15},
        {"appSessionId": "a" * 129},
        {"appSessionId": "has space-0123456789"},
        {"appSessionId": "has/slash-0123456789"},
        {"appSessionId": "dots.are.not.allowed.here"},
        {"appSessionId": "colon:is:not:allowed:here"},
        {"appSessionId": "trailing-newline-0123\n"},
        {"appSessionId": ""},
        {"appSessionId": 1234567890123456789},
        {"appSessionId": ["app-0123456789abcdef"]},
        {"appSessionId": {"id": "app-0123456789abcdef"}},
        {"appSessionId": True},
        "not-an-object",
        ["app-0123456789abcdef"],
    ],
    ids=repr,
)
async def test_connect_refused_for_malformed_app_session_id(start_gateway, clients, auth) -> None:
    gw = await start_gateway()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await clients(gw.url, auth=auth)
    # The server is fine: the next client connects.
    ok = await clients(gw.url, auth={"appSessionId": app_id("after-refusal")})
    assert (await ok.call("app:status"))["success"] is True


async def test_connect_app_session_id_boundaries(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    for app_session_id in ("a" * 16, "Z_-9" * 32):
        code = (await register(runner, "r-bound"))["pairingCode"]
        app = await clients(gw.url, auth={"appSessionId": app_session_id})
        assert (await pair(app, code))["appSessionId"] == app_session_id
        assert await runner.next("pairing:paired") == {"appSessionId": app_session_id}


async def test_connect_without_auth_gets_server_assigned_id(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    code = (await register(runner, "r-anon"))["pairingCode"]
    app = await clients(gw.url)
    other = await clients(gw.url, auth={})  # an empty auth object is the same as none
    ack = await pair(app, code)
    assigned = ack["appSessionId"]
    assert APP_ID_RE.match(assigned), assigned
    assert await runner.next("pairing:paired") == {"appSessionId": assigned}
    assert await app.call("app:command", {"data": "whoami"}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": assigned, "data": "whoami"}
    # Another anonymous socket gets its own id (not paired).
    assert await other.call("app:status") == UNPAIRED_STATUS
    code = (await register(runner, "r-anon"))["pairingCode"]
    second = (await pair(other, code))["appSessionId"]
    assert APP_ID_RE.match(second) and second != assigned


async def test_reconnect_with_same_id_resumes_pairing(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    code = (await register(runner, "r-resume"))["pairingCode"]
    me = app_id("resume")
    first = await clients(gw.url, auth={"appSessionId": me})
    await pair(first, code)
    assert await runner.next("pairing:paired") == {"appSessionId": me}
    await first.close()
    # An app's disconnect keeps its pairing (the app may come back): no notice to the runner.
    assert await runner.call("runner:output", {"data": "while away"}) == {
        "success": True,
        "delivered": 1,
    }
    assert runner.pending("pairing:app_unpaired") == 0
    again = await clients(gw.url, auth={"appSessionId": me})
    assert await again.call("app:status") == {
        "success": True,
        "paired": True,
        "runnerId": "r-resume",
        "runnerOnline": True,
    }
    assert await again.call("app:command", {"data": "back"}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": me, "data": "back"}
    assert await runner.call("runner:output", {"data": "welcome"}) == {
        "success": True,
        "delivered": 1,
    }
    assert await again.next("terminal:output") == {"runnerId": "r-resume", "data": "welcome"}


async def test_long_polling_transport(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url, transports=["polling"])
    code = (await register(runner, "r-poll"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("poll")}, transports=["polling"])
    await pair(app, code)
    assert await runner.next("pairing:paired") == {"appSessionId": app_id("poll")}
    assert await app.call("app:command", {"data": b"\x00bin"}) == {"success": True}
    assert await runner.next("terminal:input") == {
        "appSessionId": app_id("poll"),
        "data": b"\x00bin",
    }
    assert (await runner.call("runner:output", {"data": "polled"}))["delivered"] == 1
    assert await app.next("terminal:output") == {"runnerId": "r-poll", "data": "polled"}


# -- app:pair ----------------------------------------------------------------------------------


async def test_pair_success(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    code = (await register(runner, "r-pair"))["pairingCode"]
    me = app_id("pair")
    app = await clients(gw.url, auth={"appSessionId": me})
    ack = await app.call("app:pair", {"pairingCode": code})
    assert ack == {"success": True, "runnerId": "r-pair", "appSessionId": me}
    assert await runner.next("pairing:paired") == {"appSessionId": me}
    # PairingSessionService's Redis layout: the runner's set of apps and the session key.
    assert await redis.smembers(keys.runner_apps("r-pair")) == {me.encode()}
    assert await redis.exists(keys.session(me))


async def test_pair_invalid_codes(start_gateway, clients) -> None:
    gw = await start_gateway(cfg({"rate_limit": {"pair_failures": 50}}))
    runner = await clients(gw.url)
    code = (await register(runner, "r-inv"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("inv")})
    for bad in ("ZZZZ-9999", "nope", "x", "", "bad code!", "Q" * 33):
        assert_error(await app.call("app:pair", {"pairingCode": bad}), "INVALID_CODE")
    await pair(app, code)
    # Used: single-use, also for another app and for the same one.
    other = await clients(gw.url, auth={"appSessionId": app_id("inv2")})
    assert_error(await other.call("app:pair", {"pairingCode": code}), "INVALID_CODE")
    assert_error(await app.call("app:pair", {"pairingCode": code}), "INVALID_CODE")
    # The failed attempts changed nothing: the first app is still paired, the other is not.
    assert (await app.call("app:status"))["runnerId"] == "r-inv"
    assert await other.call("app:status") == UNPAIRED_STATUS
    assert await runner.next("pairing:paired") == {"appSessionId": app_id("inv")}
    assert await runner.call("runner:heartbeat", {"runnerId": "r-inv"}) == {"success": True}
    assert runner.pending("pairing:paired") == 0


async def test_pair_expired_code(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg({"pairing_code": {"ttl_s": 0.3}}))
    runner = await clients(gw.url)
    ack = await register(runner, "r-exp")
    code = ack["pairingCode"]
    assert ack["expiresAt"] - time.time() * 1000 < 1_000

    async def expired() -> bool:
        return not await redis.exists(keys.code(code))

    await wait_until(expired, timeout=5)
    app = await clients(gw.url, auth={"appSessionId": app_id("exp")})
    assert_error(await app.call("app:pair", {"pairingCode": code}), "INVALID_CODE")
    assert await app.call("app:status") == UNPAIRED_STATUS


async def test_pair_runner_offline_stale_heartbeat(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    code = (await register(runner, "r-off"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("off")})
    await stale_heartbeat(redis, "r-off")
    assert_error(await app.call("app:pair", {"pairingCode": code}), "RUNNER_OFFLINE")
    assert await app.call("app:status") == UNPAIRED_STATUS
    # No heartbeat key at all is offline too.
    await redis.delete(keys.heartbeat("r-off"))
    assert_error(await app.call("app:pair", {"pairingCode": code}), "RUNNER_OFFLINE")
    # The code was not spent: once the runner is back, it pairs.
    assert await runner.call("runner:heartbeat", {"runnerId": "r-off"}) == {"success": True}
    assert (await pair(app, code))["runnerId"] == "r-off"
    assert await runner.next("pairing:paired") == {"appSessionId": app_id("off")}


async def test_runner_offline_after_heartbeat_timeout(start_gateway, clients, redis) -> None:
    # The real clock: no heartbeat within timeout_s (the sweeper kept out of the way).
    gw = await start_gateway({"heartbeat": {"timeout_s": 0.8, "ttl_s": 5}, "sweep_interval_s": 60})
    runner = await clients(gw.url)
    code = (await register(runner, "r-late"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("late")})

    async def heartbeat_aged() -> bool:
        beat = await redis.get(keys.heartbeat("r-late"))
        return time.time() * 1000 - int(beat) > 1_000

    await wait_until(heartbeat_aged, timeout=5)
    assert_error(await app.call("app:pair", {"pairingCode": code}), "RUNNER_OFFLINE")
    assert await runner.call("runner:heartbeat", {"runnerId": "r-late"}) == {"success": True}
    await pair(app, code)

    async def status_offline() -> bool:
        return (await app.call("app:status"))["runnerOnline"] is False

    await wait_until(status_offline, timeout=5)
    assert_error(await app.call("app:command", {"data": "ls"}), "RUNNER_OFFLINE")


async def test_repair_moves_app_to_other_runner(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    r1 = await clients(gw.url)
    r2 = await clients(gw.url)
    code1 = (await register(r1, "r-one"))["pairingCode"]
    code2 = (await register(r2, "r-two"))["pairingCode"]
    me = app_id("move")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, code1)
    assert await r1.next("pairing:paired") == {"appSessionId": me}
    assert (await pair(app, code2))["runnerId"] == "r-two"
    assert await r1.next("pairing:app_unpaired") == {"appSessionId": me}
    assert await r2.next("pairing:paired") == {"appSessionId": me}
    assert r2.pending("pairing:app_unpaired") == 0
    assert (await app.call("app:status"))["runnerId"] == "r-two"
    assert await redis.smembers(keys.runner_apps("r-one")) == set()
    assert await redis.smembers(keys.runner_apps("r-two")) == {me.encode()}
    assert await r1.call("runner:output", {"data": "x"}) == {"success": True, "delivered": 0}
    assert await r2.call("runner:output", {"data": "y"}) == {"success": True, "delivered": 1}
    assert await app.next("terminal:output") == {"runnerId": "r-two", "data": "y"}
    assert await app.call("app:command", {"data": "to two"}) == {"success": True}
    assert await r2.next("terminal:input") == {"appSessionId": me, "data": "to two"}
    assert await r1.call("runner:heartbeat", {"runnerId": "r-one"}) == {"success": True}
    assert r1.pending("terminal:input") == 0
    assert app.pending("terminal:output") == 0


async def test_repair_same_runner_is_not_an_unpair(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    me = app_id("same")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-same"))["pairingCode"])
    await pair(app, (await register(runner, "r-same"))["pairingCode"])
    assert await runner.next("pairing:paired") == {"appSessionId": me}
    assert await runner.next("pairing:paired") == {"appSessionId": me}
    assert await runner.call("runner:output", {"data": "x"}) == {"success": True, "delivered": 1}
    assert runner.pending("pairing:app_unpaired") == 0


async def test_runner_socket_sending_app_events_is_wrong_role(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    other = await clients(gw.url)
    code = (await register(other, "r-target"))["pairingCode"]
    await register(runner, "r-role")
    assert_error(await runner.call("app:pair", {"pairingCode": code}), "WRONG_ROLE")
    assert_error(await runner.call("app:unpair", {}), "WRONG_ROLE")
    assert_error(await runner.call("app:unpair"), "WRONG_ROLE")
    assert_error(await runner.call("app:status", {}), "WRONG_ROLE")
    assert_error(await runner.call("app:status"), "WRONG_ROLE")
    assert_error(await runner.call("app:command", {"data": "ls"}), "WRONG_ROLE")
    # Still a working runner, and the code was not spent by the refused pair.
    assert await runner.call("runner:heartbeat", {"runnerId": "r-role"}) == {"success": True}
    app = await clients(gw.url, auth={"appSessionId": app_id("role")})
    assert (await pair(app, code))["runnerId"] == "r-target"


# -- rate limiting -----------------------------------------------------------------------------

LIMIT = {"rate_limit": {"pair_failures": 3, "window_s": 60}}


async def test_rate_limited_per_app_session_id(start_gateway, clients, xff_clients, redis) -> None:
    # Trusted proxy, so each attempt can come from its own address: only the app's limit bites.
    gw = await start_gateway(cfg({**LIMIT, "trusted_proxies": ["127.0.0.1"]}))
    runner = await clients(gw.url)
    code = (await register(runner, "r-rl"))["pairingCode"]
    me = app_id("rl")
    for i in range(3):
        app = await xff_clients(gw.url, f"10.1.0.{i}", auth={"appSessionId": me})
        assert_error(await app.call("app:pair", {"pairingCode": f"WRONG-{i}"}), "INVALID_CODE")
        await app.close()
    app = await xff_clients(gw.url, "10.1.0.9", auth={"appSessionId": me})
    # Past the limit: refused without the code being checked, valid or not.
    assert_error(await app.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
    assert_error(await app.call("app:pair", {"pairingCode": "WRONG-X"}), "RATE_LIMITED")
    assert await app.call("app:status") == UNPAIRED_STATUS
    assert await redis.exists(keys.code(code))  # not spent
    # Another app from the same address is not limited, and the code still works.
    other = await xff_clients(gw.url, "10.1.0.9", auth={"appSessionId": app_id("rl-other")})
    assert (await pair(other, code))["runnerId"] == "r-rl"


async def test_rate_limited_per_address(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg(LIMIT))
    runner = await clients(gw.url)
    code = (await register(runner, "r-addr"))["pairingCode"]
    for i in range(3):  # three different apps, all from 127.0.0.1
        app = await clients(gw.url, auth={"appSessionId": app_id(f"addr{i}")})
        assert_error(await app.call("app:pair", {"pairingCode": f"WRONG-{i}"}), "INVALID_CODE")
    fresh = await clients(gw.url, auth={"appSessionId": app_id("addr-fresh")})
    assert_error(await fresh.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
    anon = await clients(gw.url)  # server-assigned id, same address
    assert_error(await anon.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
    assert await redis.exists(keys.code(code))


async def test_forwarded_for_honoured_from_trusted_proxy(start_gateway, xff_clients) -> None:
    gw = await start_gateway(cfg({**LIMIT, "trusted_proxies": ["127.0.0.1"]}))
    runner = Client(reconnection=False)
    try:
        await runner.connect(gw.url)
        code = (await register(runner, "r-xff"))["pairingCode"]
        for i in range(3):
            app = await xff_clients(gw.url, "203.0.113.7", auth={"appSessionId": app_id(f"x{i}")})
            assert_error(await app.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
        same = await xff_clients(gw.url, "203.0.113.7", auth={"appSessionId": app_id("x-same")})
        assert_error(await same.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
        # The client address is the nearest untrusted hop: a spoofed first hop does not help.
        spoof = await xff_clients(
            gw.url, "198.51.100.1, 203.0.113.7", auth={"appSessionId": app_id("x-spoof")}
        )
        assert_error(await spoof.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
        # A different client behind the same proxy has its own allowance.
        elsewhere = await xff_clients(
            gw.url, "203.0.113.8", auth={"appSessionId": app_id("x-else")}
        )
        assert (await pair(elsewhere, code))["runnerId"] == "r-xff"
    finally:
        await runner.close()


async def test_forwarded_for_ignored_from_untrusted_peer(start_gateway, clients, xff_clients):
    gw = await start_gateway(cfg(LIMIT))  # trusted_proxies: []
    runner = await clients(gw.url)
    code = (await register(runner, "r-noxff"))["pairingCode"]
    for i in range(3):
        app = await xff_clients(gw.url, f"203.0.113.{i}", auth={"appSessionId": app_id(f"n{i}")})
        assert_error(await app.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
    # All of them were 127.0.0.1: one shared limit, whatever the header says.
    other = await xff_clients(gw.url, "203.0.113.99", auth={"appSessionId": app_id("n-other")})
    assert_error(await other.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")
    plain = await clients(gw.url, auth={"appSessionId": app_id("n-plain")})
    assert_error(await plain.call("app:pair", {"pairingCode": code}), "RATE_LIMITED")


async def test_forwarded_for_from_peer_outside_trusted_list(start_gateway, xff_clients) -> None:
    # 127.0.0.1 is not in the trusted network: its header is not believed.
    gw = await start_gateway(cfg({**LIMIT, "trusted_proxies": ["10.0.0.0/8"]}))
    for i in range(3):
        app = await xff_clients(gw.url, f"203.0.113.{i}", auth={"appSessionId": app_id(f"t{i}")})
        assert_error(await app.call("app:pair", {"pairingCode": "WRONG-1"}), "INVALID_CODE")
    other = await xff_clients(gw.url, "203.0.113.50", auth={"appSessionId": app_id("t-other")})
    assert_error(await other.call("app:pair", {"pairingCode": "WRONG-1"}), "RATE_LIMITED")


# -- app:unpair / app:status -------------------------------------------------------------------


async def test_unpair_and_status(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    code = (await register(runner, "r-un"))["pairingCode"]
    me = app_id("un")
    app = await clients(gw.url, auth={"appSessionId": me})
    assert await app.call("app:status") == UNPAIRED_STATUS
    assert await app.call("app:status", {}) == UNPAIRED_STATUS
    # Unpairing while not paired is fine and tells no runner anything.
    assert await app.call("app:unpair", {}) == {"success": True}
    await pair(app, code)
    assert await runner.next("pairing:paired") == {"appSessionId": me}
    paired = {"success": True, "paired": True, "runnerId": "r-un", "runnerOnline": True}
    assert await app.call("app:status") == paired
    await stale_heartbeat(redis, "r-un")
    assert await app.call("app:status") == {**paired, "runnerOnline": False}
    assert await runner.call("runner:heartbeat", {"runnerId": "r-un"}) == {"success": True}
    assert await app.call("app:unpair", {}) == {"success": True}
    assert await runner.next("pairing:app_unpaired") == {"appSessionId": me}
    assert await app.call("app:status") == UNPAIRED_STATUS
    assert not await redis.exists(keys.session(me))
    assert await redis.smembers(keys.runner_apps("r-un")) == set()
    # Idempotent, with no argument as well; the runner hears of it only once.
    assert await app.call("app:unpair") == {"success": True}
    assert await app.call("app:unpair", {}) == {"success": True}
    assert await runner.call("runner:output", {"data": "x"}) == {"success": True, "delivered": 0}
    assert runner.pending("pairing:app_unpaired") == 0
    assert_error(await app.call("app:command", {"data": "ls"}), "NOT_PAIRED")


# -- app:command ---------------------------------------------------------------------------------


async def test_command_not_paired_and_runner_offline(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    app = await clients(gw.url, auth={"appSessionId": app_id("cmd")})
    assert_error(await app.call("app:command", {"data": "ls"}), "NOT_PAIRED")
    anon = await clients(gw.url)
    assert_error(await anon.call("app:command", {"data": "ls"}), "NOT_PAIRED")
    runner = await clients(gw.url)
    await pair(app, (await register(runner, "r-cmd"))["pairingCode"])
    await stale_heartbeat(redis, "r-cmd")
    assert_error(await app.call("app:command", {"data": "ls"}), "RUNNER_OFFLINE")
    assert await runner.call("runner:heartbeat", {"runnerId": "r-cmd"}) == {"success": True}
    assert await app.call("app:command", {"data": "ls"}) == {"success": True}
    # The refused command never reached the runner; the accepted one did.
    assert await runner.next("terminal:input") == {"appSessionId": app_id("cmd"), "data": "ls"}
    assert runner.pending("terminal:input") == 0


COMMAND_DATA: list[Any] = [
    "ls -la\n",
    "",
    "\u0003",
    42,
    1.5,
    None,
    False,
    ["a", 1, None],
    {"keys": ["ctrl", "c"], "meta": {"deep": [{"x": 1}]}},
    b"\x1b[A\x00\xff",
    {"bytes": b"\x01\x02"},
]


async def test_command_relay_data_types(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    me = app_id("types")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-types"))["pairingCode"])
    for value in COMMAND_DATA:
        assert await app.call("app:command", {"data": value}) == {"success": True}, value
        got = await runner.next("terminal:input")
        assert got == {"appSessionId": me, "data": value}, value
        assert type(got["data"]) is type(value)


async def test_command_order_without_awaiting_acks(start_gateway, clients) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    me = app_id("order")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-order"))["pairingCode"])
    acks = await emit_many(app, "app:command", [{"data": f"key-{i}"} for i in range(200)])
    assert acks == [{"success": True}] * 200
    got = [await runner.next("terminal:input") for _ in range(200)]
    assert got == [{"appSessionId": me, "data": f"key-{i}"} for i in range(200)]


async def test_app_disconnect_keeps_pairing(start_gateway, clients, redis) -> None:
    gw = await start_gateway(cfg())
    runner = await clients(gw.url)
    me = app_id("keep")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-keep"))["pairingCode"])
    await app.close()
    assert await runner.call("runner:heartbeat", {"runnerId": "r-keep"}) == {"success": True}
    assert await redis.exists(keys.session(me))
    assert await redis.smembers(keys.runner_apps("r-keep")) == {me.encode()}
    await quiet(runner, "pairing:app_unpaired", timeout=0.3)
