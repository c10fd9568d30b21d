"""Runner events of the contract against one in-process replica, with real clients.

runner:register, runner:heartbeat, runner:output, and what a runner's disconnect does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import pytest

from pairing import keys
from pairing.relay import OUT
from tests.support.events import (
    SLOW_HEARTBEAT,
    app_id,
    assert_error,
    emit_many,
    pair,
    quiet,
    register,
)
from tests.support.gateways import merged, watch_disconnect


def merged_cfg(extra: dict[str, Any]) -> dict[str, Any]:
    return merged(SLOW_HEARTBEAT, extra)


# -- runner:register ----------------------------------------------------------------------


async def test_register_ack_shape_and_expiry(start_gateway, clients) -> None:
    gw = await start_gateway(merged_cfg({"pairing_code": {"ttl_s": 30}}))
    runner = await clients(gw.url)
    before = time.time() * 1000
    ack = await runner.call("runner:register", {"runnerId": "r-shape"})
    after = time.time() * 1000
    assert ack["success"] is True
    assert "error" not in ack
    assert ack["runnerId"] == "r-shape"
    code = ack["pairingCode"]
    assert isinstance(code, str) and 4 <= len(code) <= 32
    assert isinstance(ack["expiresAt"], int)
    # Epoch ms, about now + pairing_code.ttl_s (Redis's clock; same host, so within 2 s).
    assert before + 30_000 - 2_000 <= ack["expiresAt"] <= after + 30_000 + 2_000


async def test_register_runner_id_boundaries(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    for runner_id in ("a", "A-z_0.9:x", "r" * 128):
        runner = await clients(gw.url)
        ack = await register(runner, runner_id)
        assert ack["runnerId"] == runner_id


@pytest.mark.parametrize(
    "payload",
    [
        {"runnerId": 42},
        {"runnerId": None},
        {"runnerId": ["r1"]},
        {"runnerId": {"id": "r1"}},
        {"runnerId": True},
        {},
        {"pairingCode": "ABCD"},
        {"runnerId": ""},
        {"runnerId": "r" * 129},
        {"runnerId": "has space"},
        {"runnerId": "has/slash"},
        {"runnerId": "trailing-newline\n"},
        {"runnerId": "tab\there"},
        {"runnerId": "ünïcode"},
        {"runnerId": "r1", "pairingCode": "abc"},  # proposed code too short
        {"runnerId": "r1", "pairingCode": "A" * 33},  # too long
        {"runnerId": "r1", "pairingCode": "AB_CD"},  # '_' is not a code character
        {"runnerId": "r1", "pairingCode": 1234},
        {"runnerId": "r1", "token": 1234},
    ],
    ids=repr,
)
async def test_register_invalid_payload(start_gateway, clients, payload) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    assert_error(await runner.call("runner:register", payload), "INVALID_PAYLOAD")
    # Nothing was registered: the socket is not a runner.
    assert_error(await runner.call("runner:heartbeat", {"runnerId": "r1"}), "NOT_REGISTERED")


async def test_register_proposed_code_is_echoed_and_pairs_case_insensitively(
    start_gateway, clients
) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner = await clients(gw.url)
    ack = await register(runner, "r-code", pairingCode="Ab12-cD")
    assert ack["pairingCode"].upper() == "AB12-CD"
    app = await clients(gw.url, auth={"appSessionId": app_id("case")})
    assert (await pair(app, "aB12-Cd"))["runnerId"] == "r-code"
    assert await runner.next("pairing:paired") == {"appSessionId": app_id("case")}


async def test_register_code_taken_by_another_runner(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    first = await clients(gw.url)
    second = await clients(gw.url)
    await register(first, "r-first", pairingCode="TAKEN-1")
    # Another runner proposing the same code, in any case: CODE_TAKEN, nothing registered.
    assert_error(
        await second.call("runner:register", {"runnerId": "r-second", "pairingCode": "taken-1"}),
        "CODE_TAKEN",
    )
    assert_error(await second.call("runner:heartbeat", {"runnerId": "r-second"}), "NOT_REGISTERED")
    # The holder may propose its own code again.
    assert (await register(first, "r-first", pairingCode="TAKEN-1"))["pairingCode"] == "TAKEN-1"
    # And the code still pairs with the holder.
    app = await clients(gw.url, auth={"appSessionId": app_id("taken")})
    assert (await pair(app, "TAKEN-1"))["runnerId"] == "r-first"


async def test_register_again_issues_new_code_and_invalidates_old(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner = await clients(gw.url)
    old = (await register(runner, "r-again"))["pairingCode"]
    new = (await register(runner, "r-again"))["pairingCode"]
    assert new.upper() != old.upper()
    app = await clients(gw.url, auth={"appSessionId": app_id("again")})
    assert_error(await app.call("app:pair", {"pairingCode": old}), "INVALID_CODE")
    assert (await pair(app, new))["runnerId"] == "r-again"
    # Proposed codes too: re-proposing frees the old proposed code for other runners.
    await register(runner, "r-again", pairingCode="FIRST-CODE")
    await register(runner, "r-again", pairingCode="SECOND-CODE")
    other = await clients(gw.url)
    assert (await register(other, "r-other", pairingCode="FIRST-CODE"))["pairingCode"] == (
        "FIRST-CODE"
    )


def _token(secret: str, runner_id: str) -> str:
    return hmac.new(secret.encode(), runner_id.encode(), hashlib.sha256).hexdigest()


async def test_register_with_runner_secret(start_gateway, clients) -> None:
    gw = await start_gateway(merged_cfg({"auth": {"runner_secret": "s3cret"}}))
    runner = await clients(gw.url)
    assert_error(await runner.call("runner:register", {"runnerId": "r-auth"}), "UNAUTHORIZED")
    for bad in ("", "00" * 32, _token("other", "r-auth"), _token("s3cret", "r-other")):
        assert_error(
            await runner.call("runner:register", {"runnerId": "r-auth", "token": bad}),
            "UNAUTHORIZED",
        )
    # Refused registrations left nothing behind.
    assert_error(await runner.call("runner:heartbeat", {"runnerId": "r-auth"}), "NOT_REGISTERED")
    ack = await register(runner, "r-auth", token=_token("s3cret", "r-auth"))
    assert ack["runnerId"] == "r-auth"
    assert await runner.call("runner:heartbeat", {"runnerId": "r-auth"}) == {"success": True}


async def test_register_without_secret_ignores_token(start_gateway, clients) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    assert (await register(runner, "r-free", token="anything"))["runnerId"] == "r-free"


async def test_app_socket_cannot_register(start_gateway, clients, redis) -> None:
    gw = await start_gateway()
    app = await clients(gw.url, auth={"appSessionId": app_id("role")})
    assert_error(await app.call("runner:register", {"runnerId": "r-role"}), "WRONG_ROLE")
    # A socket without auth that acted as an app is an app too.
    anon = await clients(gw.url)
    assert (await anon.call("app:status"))["success"] is True
    assert_error(await anon.call("runner:register", {"runnerId": "r-role"}), "WRONG_ROLE")
    # Neither registration happened: no heartbeat, no code, and the app is still an app.
    assert not await redis.exists(keys.heartbeat("r-role"))
    assert not await redis.exists(keys.runner_code("r-role"))
    assert (await app.call("app:status"))["success"] is True


async def test_runner_online_right_after_register(start_gateway, clients) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    code = (await register(runner, "r-online"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("online")})
    await pair(app, code)
    assert await app.call("app:status") == {
        "success": True,
        "paired": True,
        "runnerId": "r-online",
        "runnerOnline": True,
    }


# -- runner:heartbeat ---------------------------------------------------------------------


async def test_heartbeat(start_gateway, clients, redis) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    assert_error(await runner.call("runner:heartbeat", {"runnerId": "r-hb"}), "NOT_REGISTERED")
    await register(runner, "r-hb")
    await redis.set(keys.heartbeat("r-hb"), "1000")  # ancient
    assert await runner.call("runner:heartbeat", {"runnerId": "r-hb"}) == {"success": True}
    beat = int(await redis.get(keys.heartbeat("r-hb")))
    assert abs(beat - time.time() * 1000) < 2_000
    assert 0 < await redis.pttl(keys.heartbeat("r-hb")) <= 5_000  # TEST_CONFIG ttl_s 5
    # Another runnerId than the registered one: NOT_REGISTERED, and it is not written.
    assert_error(await runner.call("runner:heartbeat", {"runnerId": "r-someone"}), "NOT_REGISTERED")
    assert await redis.get(keys.heartbeat("r-someone")) is None
    # An app socket cannot heartbeat.
    app = await clients(gw.url, auth={"appSessionId": app_id("hb")})
    assert_error(await app.call("runner:heartbeat", {"runnerId": "r-hb"}), "NOT_REGISTERED")


async def test_heartbeat_keeps_runner_online(start_gateway, clients, redis) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner = await clients(gw.url)
    code = (await register(runner, "r-hb2"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("hb2")})
    await pair(app, code)
    stale = str(int(time.time() * 1000) - 60_000)
    await redis.set(keys.heartbeat("r-hb2"), stale)
    assert (await app.call("app:status"))["runnerOnline"] is False
    assert await runner.call("runner:heartbeat", {"runnerId": "r-hb2"}) == {"success": True}
    assert (await app.call("app:status"))["runnerOnline"] is True


async def test_takeover_disconnects_old_socket_and_keeps_apps(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    old = await clients(gw.url)
    old_gone = watch_disconnect(old)
    code = (await register(old, "r-take"))["pairingCode"]
    app = await clients(gw.url, auth={"appSessionId": app_id("take")})
    await pair(app, code)
    new = await clients(gw.url)
    await register(new, "r-take")
    await asyncio.wait_for(old_gone.wait(), 10)
    assert not old.sio.connected
    # The old socket's disconnect did not unpair the app: status, relay both ways.
    status = await app.call("app:status")
    assert status == {"success": True, "paired": True, "runnerId": "r-take", "runnerOnline": True}
    assert await app.call("app:command", {"data": "after takeover"}) == {"success": True}
    assert await new.next("terminal:input") == {
        "appSessionId": app_id("take"),
        "data": "after takeover",
    }
    assert await new.call("runner:output", {"data": "hi"}) == {"success": True, "delivered": 1}
    assert await app.next("terminal:output") == {"runnerId": "r-take", "data": "hi"}
    assert app.pending("pairing:unpaired") == 0
    assert await new.call("runner:heartbeat", {"runnerId": "r-take"}) == {"success": True}


# -- runner:output --------------------------------------------------------------------------


async def _runner_with_apps(gw, clients, runner_id: str, n: int) -> tuple[Any, list[Any]]:
    runner = await clients(gw.url)
    apps = []
    for i in range(n):
        code = (await register(runner, runner_id))["pairingCode"]
        app = await clients(gw.url, auth={"appSessionId": app_id(f"{runner_id}-{i}")})
        await pair(app, code)
        assert await runner.next("pairing:paired") == {"appSessionId": app_id(f"{runner_id}-{i}")}
        apps.append(app)
    return runner, apps


async def test_output_reaches_every_paired_app(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner, apps = await _runner_with_apps(gw, clients, "r-out", 3)
    bystander = await clients(gw.url, auth={"appSessionId": app_id("bystander")})
    assert (await bystander.call("app:status"))["paired"] is False
    assert await runner.call("runner:output", {"data": "hello"}) == {
        "success": True,
        "delivered": 3,
    }
    for app in apps:
        assert await app.next("terminal:output") == {"runnerId": "r-out", "data": "hello"}
    # Only the named app.
    target = app_id("r-out-1")
    ack = await runner.call("runner:output", {"data": "just you", "appSessionId": target})
    assert ack == {"success": True, "delivered": 1}
    assert await apps[1].next("terminal:output") == {"runnerId": "r-out", "data": "just you"}
    # An app that is not paired with this runner gets nothing, even when named.
    ack = await runner.call(
        "runner:output", {"data": "not yours", "appSessionId": app_id("bystander")}
    )
    assert ack == {"success": True, "delivered": 0}
    # Barrier: one more broadcast, which every app sees next (so nothing else was queued).
    assert (await runner.call("runner:output", {"data": "end"}))["delivered"] == 3
    for app in apps:
        assert await app.next("terminal:output") == {"runnerId": "r-out", "data": "end"}
        assert app.pending("terminal:output") == 0
    assert bystander.pending("terminal:output") == 0


async def test_output_with_no_apps_and_unregistered(start_gateway, clients) -> None:
    gw = await start_gateway()
    runner = await clients(gw.url)
    assert_error(await runner.call("runner:output", {"data": "x"}), "NOT_REGISTERED")
    await register(runner, "r-lonely")
    assert await runner.call("runner:output", {"data": "x"}) == {"success": True, "delivered": 0}
    app = await clients(gw.url, auth={"appSessionId": app_id("out-app")})
    assert_error(await app.call("runner:output", {"data": "x"}), "NOT_REGISTERED")


DATA_VALUES: list[Any] = [
    "plain text",
    "ünïcödé ✓ \u0000 \n\t",
    "",
    0,
    -17,
    2**53,
    3.25,
    True,
    False,
    None,
    [],
    [1, "two", None, [3.5, {"four": 4}]],
    {},
    {"nested": {"deeper": {"list": [1, 2, {"x": None}]}, "flag": True}},
    b"\x00\x01\xfe\xff binary",
    {"chunk": b"\x1b[31mred\x1b[0m", "seq": 7},
    [b"a", b"b"],
]


async def test_output_data_types_round_trip(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner, (app,) = await _runner_with_apps(gw, clients, "r-types", 1)
    for value in DATA_VALUES:
        ack = await runner.call("runner:output", {"data": value})
        assert ack == {"success": True, "delivered": 1}, value
        got = await app.next("terminal:output")
        assert got == {"runnerId": "r-types", "data": value}, value
        assert type(got["data"]) is type(value)


async def test_output_order_without_awaiting_acks(start_gateway, clients) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner, apps = await _runner_with_apps(gw, clients, "r-order", 2)
    acks = await emit_many(runner, "runner:output", [{"data": f"chunk-{i}"} for i in range(200)])
    assert acks == [{"success": True, "delivered": 2}] * 200
    for app in apps:
        got = [(await app.next("terminal:output"))["data"] for _ in range(200)]
        assert got == [f"chunk-{i}" for i in range(200)]


# -- disconnect -----------------------------------------------------------------------------


async def test_runner_disconnect_unpairs_every_app_once(start_gateway, clients, redis) -> None:
    gw = await start_gateway(SLOW_HEARTBEAT)
    runner, apps = await _runner_with_apps(gw, clients, "r-bye", 2)
    assert await redis.scard(keys.runner_apps("r-bye")) == 2
    await runner.close()
    for app in apps:
        assert await app.next("pairing:unpaired") == {
            "runnerId": "r-bye",
            "reason": "RUNNER_DISCONNECTED",
        }
    assert not await redis.exists(keys.runner_apps("r-bye"))
    for i in range(2):
        assert not await redis.exists(keys.session(app_id(f"r-bye-{i}")))
    assert not await redis.exists(keys.heartbeat("r-bye"))
    for app in apps:
        assert await app.call("app:status") == {
            "success": True,
            "paired": False,
            "runnerId": None,
            "runnerOnline": False,
        }
        assert_error(await app.call("app:command", {"data": "ls"}), "NOT_PAIRED")
    # Exactly one: no second notice, e.g. from the sweeper (sweep interval 0.3 s).
    for app in apps:
        await quiet(app, "pairing:unpaired", timeout=0.8)


# -- runner:output on a Redis Cluster: the runner's paired apps as the replica knows them ----


class _Clock:
    """The gateway's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cluster_output_trusts_notified_apps_and_rereads_the_set_each_second(
    start_gateway, clients, redis_cluster, cluster_redis
) -> None:
    """On a cluster the runner's app set is another slot than its apps' keys: the replica
    reads it once, then keeps what it knows current from the pairing notifications its
    runner socket receives, and reads it again once ``members_recheck_s`` (1 s) has passed;
    an app paired without a notification reaching the replica (a lost message) is reached
    from then on."""
    from gateway.app import GATEWAY
    from tests.support.backends import Backend
    from tests.support.cluster_pairing import replica

    backend = Backend(cluster=redis_cluster)
    gw = await start_gateway({"redis_url": redis_cluster.url, **SLOW_HEARTBEAT})
    clock = _Clock()
    gw.app[GATEWAY].clock = clock
    runner, apps = await _runner_with_apps(gw, clients, "r-trust", 1)

    def reads() -> int:
        return backend.command_calls("smembers")

    first_read = reads()
    ack = await runner.call("runner:output", {"data": "first"})
    assert ack == {"success": True, "delivered": 1}
    after_first = reads()
    # Nothing known yet: the set is read, once (its answer is what the relay then uses).
    assert after_first == first_read + 1
    sent = [f"out-{i}" for i in range(20)]
    acks = await emit_many(runner, "runner:output", [{"data": d} for d in sent])
    assert all(a == {"success": True, "delivered": 1} for a in acks), acks
    assert reads() == after_first  # known and confirmed within the second: not read again
    got = [(await apps[0].next("terminal:output"))["data"] for _ in range(21)]
    assert got == ["first", *sent]

    # A second app pairs through the gateway: the runner socket's pairing:paired keeps the
    # replica's view current, without reading the set.
    code = (await register(runner, "r-trust"))["pairingCode"]
    second = await clients(gw.url, auth={"appSessionId": app_id("r-trust-second")})
    await pair(second, code)
    assert await runner.next("pairing:paired") == {"appSessionId": app_id("r-trust-second")}
    ack = await runner.call("runner:output", {"data": "both"})
    assert ack == {"success": True, "delivered": 2}
    assert reads() == after_first
    for app in (apps[0], second):
        assert (await app.next("terminal:output"))["data"] == "both"

    # A pairing whose notification never reached this replica: missed until the recheck.
    silent = app_id("r-trust-silent")
    await replica(cluster_redis).sessions.pair(silent, "r-trust")
    ack = await runner.call("runner:output", {"data": "not yet"})
    assert ack == {"success": True, "delivered": 2}
    clock.now += 1.0
    ack = await runner.call("runner:output", {"data": "all three"})
    assert ack == {"success": True, "delivered": 3}
    after_recheck = reads()
    assert after_recheck == after_first + 1
    seqs = await cluster_redis.get(keys.CLUSTER.resume_seq(silent, OUT))
    assert seqs == b"1"  # held for the silent app: one message, the one after the recheck

    # An app unpaired without its notification: its own step refuses it (its session no
    # longer names the runner), nothing is sent to it, and the set is read next time.
    await replica(cluster_redis).sessions.unpair(silent)
    ack = await runner.call("runner:output", {"data": "two again"})
    assert ack == {"success": True, "delivered": 2}
    assert reads() == after_recheck
    ack = await runner.call("runner:output", {"data": "and again"})
    assert ack == {"success": True, "delivered": 2}
    assert reads() == after_recheck + 1
