"""Hostile and malformed input: every event gets exactly the contract's ack, whatever it
carries, and the process keeps serving.

Through python-socketio clients (every payload shape the client can send) and through a raw
websocket (frames the client library would never produce).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from gateway.app import FANOUT
from gateway.protocol import MAX_DATA_DEPTH, GatewayError, check_depth
from tests.support.events import (
    SLOW_HEARTBEAT,
    RawSocket,
    app_id,
    assert_error,
    pair,
    register,
)
from tests.support.gateways import Client, merged, watch_disconnect

#: Failed pair attempts in the burst must not rate-limit the pairing flow run afterwards.
CFG = merged(SLOW_HEARTBEAT, {"rate_limit": {"pair_failures": 1000}})

FIELD_EVENTS = (
    "runner:register",
    "runner:heartbeat",
    "runner:output",
    "app:pair",
    "app:command",
    "app:resize",
)
NO_FIELD_EVENTS = ("app:unpair", "app:status")
UNKNOWN_EVENT = "no:such:event"
ALL_EVENTS = (*FIELD_EVENTS, *NO_FIELD_EVENTS, UNKNOWN_EVENT)

BIG = "x" * 900_000  # below socketio.max_payload_bytes (1,000,000) with the frame around it


def nested_dict(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        (nested_dict(MAX_DATA_DEPTH), False),
        (nested_dict(MAX_DATA_DEPTH + 1), True),
        (nested_list(MAX_DATA_DEPTH - 1), False),  # (the innermost [] is a level too)
        (nested_list(MAX_DATA_DEPTH), True),
        ({"flat": 1, "deep": nested_list(MAX_DATA_DEPTH - 2), "after": [1]}, False),
        ({"flat": 1, "deep": nested_list(MAX_DATA_DEPTH - 1), "after": [1]}, True),
        ([[1], {"x": [nested_dict(MAX_DATA_DEPTH - 3)]}, []], False),
        ([[1], {"x": [nested_dict(MAX_DATA_DEPTH - 2)]}, []], True),
        ("text", False),
    ],
)
def test_depth_limit_counts_every_level(data: Any, refused: bool) -> None:
    if refused:
        with pytest.raises(GatewayError):
            check_depth(data)
    else:
        check_depth(data)


def in_field(event: str, value: Any) -> dict[str, Any]:
    """``value`` where the event's typed field goes (no-field events: an ignored extra field)."""
    if event in ("runner:register", "runner:heartbeat"):
        return {"runnerId": value}
    if event == "runner:output":
        return {"data": "fine", "appSessionId": value}
    if event == "app:pair":
        # Any string is a pairing attempt (INVALID_CODE, see protocol.PairPayload): wrap it.
        return {"pairingCode": value if not isinstance(value, str) else [value]}
    if event == "app:command":
        return {"dat": value}  # 'data' missing; any value of 'data' would be valid
    if event == "app:resize":
        return {"cols": value, "rows": 24}
    return {"padding": value}


WRONG_TYPES: dict[str, dict[str, Any]] = {
    "runner:register": {"runnerId": 1, "pairingCode": 2, "token": 3},
    "runner:heartbeat": {"runnerId": ["r1"]},
    "runner:output": {"data": "x", "appSessionId": 123},
    "app:pair": {"pairingCode": 1234},
    "app:command": {"Data": "x"},
    "app:resize": {"cols": "80", "rows": 24.0},
    "app:unpair": {"unknown": 1},  # no fields: extra ones are ignored
    "app:status": {"unknown": [1, 2]},
    UNKNOWN_EVENT: {"x": 1},
}

# (name, what sio.call sends, kind): kind "none" = no argument, "object" = an object that
# only a no-field event accepts, "bad" = never acceptable.
Variant = tuple[str, Any, str]


def variants(event: str) -> list[Variant]:
    return [
        ("no argument", None, "none"),
        ("null", (None,), "bad"),
        ("number", 42, "bad"),
        ("float", 1.5, "bad"),
        ("bool", True, "bad"),
        ("string", "hello", "bad"),
        ("empty string", "", "bad"),
        ("list", [1, 2], "bad"),
        ("empty list", [], "bad"),
        ("list of object", [{"runnerId": "r1", "pairingCode": "ABCD"}], "bad"),
        ("several arguments", ({"runnerId": "r1"}, {"runnerId": "r2"}), "bad"),
        ("several empty objects", ({}, {}), "bad"),
        ("bytes", b"\x00\x01\x02\xff", "bad"),
        ("nested list", nested_list(200), "bad"),
        ("wrong field types", WRONG_TYPES[event], "object"),
        ("missing fields", {}, "object"),
        ("unrelated fields", {"unrelated": True, "runnerid": "r1", "pairingcode": "x"}, "object"),
        ("900 KB string field", in_field(event, BIG), "object"),
        ("nested depth 200 field", in_field(event, nested_dict(200)), "object"),
        ("bytes field", in_field(event, b"\x00\xfe"), "object"),
    ]


def expected(event: str, kind: str, role: str) -> str:
    if event in NO_FIELD_EVENTS and kind in ("none", "object"):
        return "WRONG_ROLE" if role == "runner" else "success"
    return "INVALID_PAYLOAD"


@pytest.fixture
async def raw_open():
    """Open raw Engine.IO websockets; all are closed before the gateways stop."""
    http = aiohttp.ClientSession()
    made: list[RawSocket] = []

    async def open_(url: str, connect: str | None = "40") -> RawSocket:
        raw = await RawSocket.open(http, url, connect=connect)
        made.append(raw)
        return raw

    yield open_
    for raw in made:
        await raw.close()
    await http.close()


async def normal_flow(url: str, tag: str) -> None:
    """Register, pair, relay both ways, unpair: the server still does its job."""
    runner = Client(reconnection=False)
    app = Client(reconnection=False)
    try:
        await runner.connect(url)
        await app.connect(url, auth={"appSessionId": app_id(tag)})
        code = (await register(runner, f"r-{tag}"))["pairingCode"]
        await pair(app, code)
        assert await runner.next("pairing:paired") == {"appSessionId": app_id(tag)}
        assert await app.call("app:command", {"data": "echo ok"}) == {"success": True}
        assert (await runner.next("terminal:input"))["data"] == "echo ok"
        assert (await runner.call("runner:output", {"data": "ok"}))["delivered"] == 1
        assert await app.next("terminal:output") == {"runnerId": f"r-{tag}", "data": "ok"}
        assert await app.call("app:unpair") == {"success": True}
        assert await runner.next("pairing:app_unpaired") == {"appSessionId": app_id(tag)}
    finally:
        await app.close()
        await runner.close()


async def test_malformed_burst_through_client(start_gateway, clients) -> None:
    gw = await start_gateway(CFG)
    sockets = {
        "anonymous": await clients(gw.url),
        "app": await clients(gw.url, auth={"appSessionId": app_id("burst")}),
        "runner": await clients(gw.url),
    }
    await register(sockets["runner"], "r-burst")
    failures = []
    for role, sock in sockets.items():
        for event in ALL_EVENTS:
            for name, data, kind in variants(event):
                ack = await sock.sio.call(event, data, timeout=10)
                want = expected(event, kind, role)
                ok = (
                    isinstance(ack, dict) and ack.get("success") is True and "error" not in ack
                    if want == "success"
                    else isinstance(ack, dict)
                    and set(ack) == {"error", "message"}
                    and ack["error"] == want
                    and isinstance(ack["message"], str)
                )
                if not ok:
                    failures.append(f"{role} {event} {name}: want {want}, got {str(ack)[:200]}")
    assert not failures, "\n".join(failures)
    # Every socket is still connected and in its role.
    assert all(s.sio.connected for s in sockets.values())
    assert await sockets["runner"].call("runner:heartbeat", {"runnerId": "r-burst"}) == {
        "success": True
    }
    assert (await sockets["app"].call("app:status"))["paired"] is False
    await normal_flow(gw.url, "after-burst")


async def test_large_values_where_any_value_is_valid(start_gateway, clients) -> None:
    gw = await start_gateway(CFG)
    runner = await clients(gw.url)
    me = app_id("big")
    app = await clients(gw.url, auth={"appSessionId": me})
    # A 900 KB string as a pairing code is a failed attempt like any other wrong code.
    assert_error(await app.call("app:pair", {"pairingCode": BIG}), "INVALID_CODE")
    await pair(app, (await register(runner, "r-big"))["pairingCode"])
    assert await app.call("app:command", {"data": BIG}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": me, "data": BIG}
    assert await runner.call("runner:output", {"data": BIG}) == {"success": True, "delivered": 1}
    assert await app.next("terminal:output") == {"runnerId": "r-big", "data": BIG}
    blob = bytes(range(256)) * 3500  # ~900 KB of binary
    assert await runner.call("runner:output", {"data": blob}) == {"success": True, "delivered": 1}
    assert (await app.next("terminal:output"))["data"] == blob
    deep = nested_dict(200)
    assert await app.call("app:command", {"data": deep}) == {"success": True}
    assert (await runner.next("terminal:input"))["data"] == deep


async def test_payload_above_limit_closes_only_that_connection(start_gateway, clients) -> None:
    gw = await start_gateway(CFG)
    runner = await clients(gw.url)
    me = app_id("huge")
    app = await clients(gw.url, auth={"appSessionId": me})
    await pair(app, (await register(runner, "r-huge"))["pairingCode"])
    gone = watch_disconnect(app)
    # 1.2 MB > socketio.max_payload_bytes: the server drops this connection.
    await app.sio.emit("app:command", {"data": "y" * 1_200_000}, callback=lambda *_: None)
    await asyncio.wait_for(gone.wait(), 10)
    assert runner.pending("terminal:input") == 0
    # The process and the runner's connection are fine; the app resumes its pairing.
    assert await runner.call("runner:heartbeat", {"runnerId": "r-huge"}) == {"success": True}
    again = await clients(gw.url, auth={"appSessionId": me})
    assert (await again.call("app:status"))["paired"] is True
    assert await again.call("app:command", {"data": "small"}) == {"success": True}
    assert await runner.next("terminal:input") == {"appSessionId": me, "data": "small"}
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/healthz") as resp:
        assert resp.status == 200
    await normal_flow(gw.url, "after-huge")


def ev(ack_id: int, event: str, *args_json: str) -> str:
    """A raw EVENT frame asking for ack ``ack_id``, its arguments given as JSON text."""
    return "42%d[%s]" % (ack_id, ",".join((json.dumps(event), *args_json)))  # noqa: UP031


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_deeply_nested_payloads(start_gateway, clients, raw_open) -> None:
    # Raw frames: python's json and python-socketio's client both recurse per level.
    gw = await start_gateway(CFG)
    runner = await clients(gw.url)
    me = app_id("deep")
    raw = await raw_open(gw.url, connect="40" + json.dumps({"appSessionId": me}))
    code = (await register(runner, "r-deep"))["pairingCode"]
    await raw.send(ev(1, "app:pair", json.dumps({"pairingCode": code})))
    assert (await raw.ack(1))["success"] is True
    await raw.send(ev(2, "app:command", '{"data":' + _deep_json(200) + "}"))
    assert await raw.ack(2) == {"success": True}
    assert (await runner.next("terminal:input"))["data"] == nested_list(199)
    # Too deep to relay (600: python-socketio's encoder recurses per level), too deep
    # to decode (5000): INVALID_PAYLOAD either way, nothing relayed.
    for ack_id, depth in ((3, 600), (4, 5000)):
        await raw.send(ev(ack_id, "app:command", '{"data":' + _deep_json(depth) + "}"))
        assert_error(await raw.ack(ack_id), "INVALID_PAYLOAD")
    for ack_id, depth in ((5, 600), (6, 5000)):
        await raw.send(ev(ack_id, "app:status", _deep_json(depth)))
        assert_error(await raw.ack(ack_id), "INVALID_PAYLOAD")
    # The same from the runner's side, through a raw runner socket.
    raw_runner = await raw_open(gw.url)
    await raw_runner.send('421["runner:register",{"runnerId":"r-deep2"}]')
    code2 = (await raw_runner.ack(1))["pairingCode"]
    await raw.send(ev(7, "app:pair", json.dumps({"pairingCode": code2})))
    assert (await raw.ack(7))["runnerId"] == "r-deep2"
    for ack_id, depth in ((2, 600), (3, 5000)):
        await raw_runner.send(ev(ack_id, "runner:output", '{"data":' + _deep_json(depth) + "}"))
        assert_error(await raw_runner.ack(ack_id), "INVALID_PAYLOAD")
    await raw_runner.send('424["runner:output",{"data":"still here"}]')
    assert await raw_runner.ack(4) == {"success": True, "delivered": 1}
    assert await raw.event("terminal:output") == {
        "runnerId": "r-deep2",
        "data": "still here",
        "seq": 1,
    }
    assert runner.pending("terminal:input") == 0
    await normal_flow(gw.url, "after-deep")


async def test_deep_data_for_another_replica_does_not_break_its_fanout(
    start_gateway, clients, raw_open
) -> None:
    # The one test here with two replicas: the runner on one, the app on the other, so the
    # output travels through the app replica's pub/sub listener.
    gw_runner = await start_gateway(CFG)
    gw_app = await start_gateway(CFG)
    assert await gw_runner.app[FANOUT].wait_connected(5)
    assert await gw_app.app[FANOUT].wait_connected(5)
    app = await clients(gw_app.url, auth={"appSessionId": app_id("remote")})
    raw = await raw_open(gw_runner.url)
    await raw.send(ev(1, "runner:register", '{"runnerId":"r-remote"}'))
    await pair(app, (await raw.ack(1))["pairingCode"])
    await raw.send(ev(2, "runner:output", '{"data":' + _deep_json(600) + "}"))
    # Refused by the sender's replica, as it would be if the app were local.
    assert (await raw.ack(2))["error"] == "INVALID_PAYLOAD"
    await raw.send(ev(3, "runner:output", '{"data":' + _deep_json(256) + "}"))
    assert await raw.ack(3) == {"success": True, "delivered": 1}  # the limit itself relays
    deep = (await app.next("terminal:output", timeout=5))["data"]
    for _ in range(255):
        assert isinstance(deep, list) and len(deep) == 1
        deep = deep[0]
    assert deep == []
    for i in range(5):  # right behind it, before any listener could have resubscribed
        await raw.send(ev(10 + i, "runner:output", json.dumps({"data": f"after-{i}"})))
    for i in range(5):
        assert await raw.ack(10 + i) == {"success": True, "delivered": 1}
    got = [(await app.next("terminal:output", timeout=5))["data"] for _ in range(5)]
    assert got == [f"after-{i}" for i in range(5)]


#: (frame, ack id or None, expected ack: "success" / an error code / None for "no ack")
RAW_FRAMES: list[tuple[str | bytes, int | None, str | None]] = [
    ('421["connect",{}]', 1, "INVALID_PAYLOAD"),
    ('422["disconnect"]', 2, "INVALID_PAYLOAD"),
    ("423[1,2]", 3, "INVALID_PAYLOAD"),
    ("424[]", 4, "INVALID_PAYLOAD"),
    ('425{"app:status":1}', 5, "INVALID_PAYLOAD"),
    ('426"app:status"', 6, "INVALID_PAYLOAD"),
    ("427null", 7, "INVALID_PAYLOAD"),
    ("428[null]", 8, "INVALID_PAYLOAD"),
    ('429["app:status"]', 9, "success"),
    ('4210["app:status",null]', 10, "INVALID_PAYLOAD"),
    ('4211["app:status",{},{}]', 11, "INVALID_PAYLOAD"),
    ('4212["no:such:event",{}]', 12, "INVALID_PAYLOAD"),
    ('4213["app:pair",{"pairingCode":{"$ne":null}}]', 13, "INVALID_PAYLOAD"),
    ('4214["app:status"', 14, "INVALID_PAYLOAD"),  # truncated JSON, but the id is there
    ("4215{bad json", 15, "INVALID_PAYLOAD"),
    ('4216["app:status"]trailing', 16, "INVALID_PAYLOAD"),
    ('4217[true,"app:status"]', 17, "INVALID_PAYLOAD"),
    ('4218["runner:register",{"runnerId":"r 1"}]', 18, "INVALID_PAYLOAD"),
    ('4219["runner:heartbeat",{"runnerId":"r1"}]', 19, "NOT_REGISTERED"),
    ('42/,20["app:status"]', 20, "success"),  # the default namespace, spelled out
    ('4221["app:command",{"data":"x"},"extra"]', 21, "INVALID_PAYLOAD"),
    ('4222["\\u0000\\ud800",{}]', 22, "INVALID_PAYLOAD"),
    ('4223["connect_error",{}]', 23, "INVALID_PAYLOAD"),
    # No ack id: nothing to answer, dropped.
    ("42{bad json", None, None),
    ('42["app:status"', None, None),
    ("42", None, None),
    ("4", None, None),
    ("4x", None, None),
    ("49", None, None),
    ('42["app:status"]', None, None),  # valid, but no ack was asked for
    ("43999[1]", None, None),  # an ack for nothing
    ("40", None, None),  # connecting again: a connect error, the socket stays
    ("40/nope,", None, None),
    (b"\x00\x01garbage", None, None),
]


async def test_raw_socketio_frames(start_gateway, raw_open) -> None:
    gw = await start_gateway(CFG)
    raw = await raw_open(gw.url)
    for frame, _, _ in RAW_FRAMES:
        await raw.send(frame)
    await raw.send('42100["app:status"]')  # a barrier: handled after all of the above
    assert (await raw.ack(100))["success"] is True
    failures = []
    for frame, ack_id, want in RAW_FRAMES:
        if ack_id is None:
            continue
        ack = raw.acks.get(ack_id)
        if want == "success":
            good = isinstance(ack, dict) and ack.get("success") is True
        else:
            good = isinstance(ack, dict) and set(ack) == {"error", "message"}
            good = good and ack["error"] == want
        if not good:
            failures.append(f"{frame!r}: want {want}, got {ack!r}")
    assert not failures, "\n".join(failures)
    wanted = {ack_id for _, ack_id, _ in RAW_FRAMES if ack_id is not None} | {100}
    assert set(raw.acks) == wanted  # nothing answered twice or out of thin air
    # The only other frames: connect errors for the second '40' and for '/nope'.
    assert all(text.startswith("44") for text in raw.other), raw.other

    # Binary events: a good one, one whose placeholder points nowhere, then a normal
    # event (a broken attachment must not swallow the packets after it).
    await raw.send('451-101["app:command",{"data":{"_placeholder":true,"num":0}}]')
    await raw.send(b"\x01\x02")
    assert_error(await raw.ack(101), "NOT_PAIRED")  # decoded fine: the app is not paired
    await raw.send('451-102["app:command",{"data":{"_placeholder":true,"num":3}}]')
    await raw.send(b"\x01\x02")
    assert_error(await raw.ack(102), "INVALID_PAYLOAD")
    await raw.send('42103["app:status"]')
    assert (await raw.ack(103))["success"] is True

    # A normal pairing flow on this very socket (server-assigned appSessionId).
    runner = Client(reconnection=False)
    try:
        await runner.connect(gw.url)
        code = (await register(runner, "r-raw"))["pairingCode"]
        await raw.send(ev(104, "app:pair", json.dumps({"pairingCode": code.lower()})))
        ack = await raw.ack(104)
        assert ack["success"] is True and ack["runnerId"] == "r-raw"
        assert await runner.next("pairing:paired") == {"appSessionId": ack["appSessionId"]}
        await raw.send('451-105["app:command",{"data":{"_placeholder":true,"num":0}}]')
        await raw.send(b"\xffbytes")
        assert await raw.ack(105) == {"success": True}
        assert await runner.next("terminal:input") == {
            "appSessionId": ack["appSessionId"],
            "data": b"\xffbytes",
        }
        assert (await runner.call("runner:output", {"data": "to raw"}))["delivered"] == 1
        assert await raw.event("terminal:output") == {
            "runnerId": "r-raw",
            "data": "to raw",
            "seq": 1,
        }
    finally:
        await runner.close()
    assert not raw.closed
    await normal_flow(gw.url, "after-raw")


@pytest.mark.parametrize(
    ("frames", "outcome"),
    [
        (["x"], "closed"),  # not an Engine.IO packet: python-engineio closes the socket
        ([""], "closed"),
        (["1"], "closed"),  # an Engine.IO close
        (["9"], "closed"),  # not an Engine.IO packet type: closed, as Node's engine.io does
        (["7"], "closed"),
        (["2"], "closed"),  # a client's ping (v4: the server pings)
        (["6"], "usable"),  # a noop: ignored
        (["421"], "usable"),  # an event with an ack id but no body: acked, see below
        ([b"\xff" * 64], "usable"),
        (["4" + "[" * 20_000], "usable"),
        (['451-1["app:status",{"_placeholder":true,"num":0}]', "42"], "usable"),
        (["452-1[]", b"a", b"b"], "usable"),
        (["4999999999-[]"], "usable"),
        (["41"], "left"),  # a Socket.IO disconnect: out of the namespace until it rejoins
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_raw_garbage_does_not_hurt_the_server(
    start_gateway, frames, outcome, raw_open
) -> None:
    gw = await start_gateway(CFG)
    raw = await raw_open(gw.url)
    for frame in frames:
        await raw.send(frame)
    await raw.send(ev(77, "app:status"))
    if outcome == "closed":
        with pytest.raises(AssertionError, match="socket closed"):
            await raw.ack(77)
    elif outcome == "usable":
        assert (await raw.ack(77))["success"] is True
        # Frames with an ack id were answered (INVALID_PAYLOAD), nothing else.
        assert set(raw.acks) <= {1, 77}
        for ack_id, ack in raw.acks.items():
            if ack_id != 77:
                assert_error(ack, "INVALID_PAYLOAD")
    else:
        await raw.send("40")
        await raw.send(ev(78, "app:status"))
        assert (await raw.ack(78))["success"] is True
        assert 77 not in raw.acks
    # A fresh raw socket (and fresh clients) work.
    other = await raw_open(gw.url)
    await other.send(ev(1, "app:status"))
    assert (await other.ack(1))["success"] is True
    await normal_flow(gw.url, "after-garbage")


async def test_events_before_a_namespace_disconnect_are_answered_and_none_after(
    start_gateway, raw_open
) -> None:
    """A burst, then "41" and "40" in the same breath: every event of the burst is answered
    (under the connection it came on), and nothing sent while out of the namespace is."""
    gw = await start_gateway(CFG)
    raw = await raw_open(gw.url)
    frames = [ev(i, "app:status") for i in range(1, 41)]
    frames += ["41", ev(50, "app:status"), "40", ev(51, "app:status")]
    for frame in frames:
        await raw.send(frame)
    assert (await raw.ack(51))["success"] is True
    assert sorted(raw.acks) == [*range(1, 41), 51]


async def test_raw_connect_with_malformed_auth(start_gateway, raw_open) -> None:
    gw = await start_gateway(CFG)
    for auth in ('"a string"', "[1,2]", '{"appSessionId":"short"}', '{"appSessionId":7}'):
        raw = await raw_open(gw.url, connect=None)
        await raw.send("40" + auth)
        reply = await raw.recv()
        assert reply is not None and reply.startswith("44"), (auth, reply)
        # Not connected: an event gets no handler (and no session state was made).
        await raw.send('421["app:status"]')
        await raw.send("40")
        reply = await raw.recv()
        assert reply is not None and reply.startswith("40{"), reply
        await raw.send('422["app:status"]')
        assert (await raw.ack(2))["success"] is True
