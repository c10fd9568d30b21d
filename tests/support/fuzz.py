"""Hypothesis strategies for hostile Engine.IO / Socket.IO traffic, and the checks of what a
gateway answers to it.

A ``Script`` is one client session: a transport (websocket, long-polling, or long-polling
upgraded to websocket), whether it joins the default namespace first, and a list of frames,
most of them Socket.IO packets made to be almost right (real event names with truncated
JSON, lying attachment counts, placeholders pointing nowhere, reused and huge ack ids,
unknown namespaces, events before CONNECT, giant payloads) and some plain garbage (unknown
packet types, invalid UTF-8, empty frames).

``play`` runs a script against a gateway over raw HTTP or websocket frames (aiohttp's
client), every read bounded, then sends a barrier (a CONNECT and an acked ``app:status``)
unless the session was closed, and checks every answer: HTTP 200 or 400, nothing else;
server packets of known types; every ack the contract's ``{"success": true, ...}`` or
``{"error", "message"}``; every CONNECT_ERROR an object with a message; and the barrier
answered or the session closed (a hang fails).
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from hypothesis import strategies as st

from tests.support.hostile import ANSWER_TIMEOUT_S, POLL_PATH, WS_PATH

#: Contract event names (and some that are not), for events that are almost right.
EVENT_NAMES = (
    "runner:register",
    "runner:heartbeat",
    "runner:output",
    "runner:resize",
    "app:pair",
    "app:unpair",
    "app:status",
    "app:command",
    "app:resize",
    "connect",
    "disconnect",
    "message",
    "",
)
#: Ack ids: reused small ones, and huge ones.
ACK_IDS = st.one_of(
    st.integers(0, 5),
    st.integers(0, 2**63),
    st.just(10**40),
    st.just(int("9" * 99)),
)
NAMESPACES = st.sampled_from(["", "/", "/admin", "/nope", "/?x=1", "/a/b"]) | st.text(
    alphabet=string.ascii_letters + "/?,&=", max_size=12
).map(lambda s: "/" + s)
#: The gateway under fuzz is configured with this payload limit (giant payloads exceed it).
FUZZ_MAX_PAYLOAD = 64 * 1024
#: Ack id of the barrier that ends every session (not drawn by ACK_IDS' small ranges).
BARRIER_ID = 8_675_309_001

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.fixed_dictionaries(
        {"_placeholder": st.just(True), "num": st.integers(-2, 2**40) | st.text(max_size=3)}
    ),
)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["runnerId", "pairingCode", "data", "appSessionId", "cols", "rows"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
event_args = st.lists(json_values, max_size=3)


@st.composite
def event_payload(draw: st.DrawFn) -> str:
    """An event's JSON array, maybe truncated, nested too deeply or made giant."""
    name = draw(st.sampled_from(EVENT_NAMES) | st.text(max_size=10) | st.integers())
    body = json.dumps([name, *draw(event_args)])
    shape = draw(st.sampled_from(["whole", "whole", "whole", "cut", "deep", "giant", "object"]))
    if shape == "cut":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if shape == "deep":
        depth = draw(st.integers(50, 3000))
        return "[" * depth + "]" * draw(st.integers(0, depth))
    if shape == "giant":
        size = draw(st.sampled_from([FUZZ_MAX_PAYLOAD // 2, FUZZ_MAX_PAYLOAD + 100]))
        return json.dumps([name, {"data": "x" * size}])
    if shape == "object":
        return json.dumps(draw(json_values))
    return body


@st.composite
def socketio_packet(draw: st.DrawFn) -> str:
    """A Socket.IO packet: type, attachment count, namespace, ack id, payload; most parts
    plausible, each part sometimes wrong."""
    kind = draw(st.sampled_from("0123456") | st.sampled_from(["7", "9", "x", ""]))
    out = kind
    if kind in ("5", "6") or draw(st.integers(0, 9)) == 0:
        out += str(draw(st.integers(0, 3) | st.just(10**12))) + "-"
    namespace = draw(NAMESPACES) if draw(st.integers(0, 3)) == 0 else ""
    if namespace:
        out += namespace + ","
    if kind in ("2", "3", "5", "6") and draw(st.booleans()):
        out += str(draw(ACK_IDS))
    if kind == "0":
        auth = draw(
            st.sampled_from(["", "{", "[", '"auth"', "{}", '{"appSessionId":7}'])
            | json_values.map(json.dumps)
        )
        return out + auth
    if kind in ("1",):
        return out
    if kind == "4":
        return out + json.dumps(draw(json_values))
    return out + draw(event_payload())


class RawText(bytes):
    """Bytes to send as a websocket TEXT frame as they are (invalid UTF-8 included)."""

    __slots__ = ()


async def send_raw_text(ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
    """A TEXT frame of any bytes: aiohttp's send_str only sends valid UTF-8."""
    await ws._writer.send_frame(data, aiohttp.WSMsgType.TEXT)


class Big(str):
    """A giant frame, shown by its size (hypothesis reports examples by their repr)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Big({self[:40]!r}... {len(self)} chars)"


@st.composite
def frame(draw: st.DrawFn) -> str | bytes:
    """One Engine.IO packet (text), or bytes (a binary frame; over polling, invalid UTF-8)."""
    choice = draw(st.integers(0, 19))
    if choice < 13:
        text = "4" + draw(socketio_packet())
        return Big(text) if len(text) > 2000 else text
    if choice < 15:
        return draw(st.sampled_from("0123456789")) + draw(st.text(max_size=6))
    if choice < 16:
        return draw(st.sampled_from(["", "x", "4\x1e\x1e4", "b", "b!!", "40\x00", "6"]))
    if choice < 17:
        return draw(st.text(max_size=30))
    if choice < 18:
        return RawText(draw(st.sampled_from([b"4\xff", b"\xc3(", b'42["\xed\xa0\x80"]'])))
    return draw(st.binary(min_size=1, max_size=40) | st.just(b"\xff" * 64))


@dataclass(frozen=True)
class Script:
    transport: str  # "websocket", "polling", or "upgrade" (polling, then websocket)
    connect_first: bool
    frames: tuple[str | bytes, ...]
    batched: bool  # polling: all text frames in one POST, joined by \x1e


scripts = st.builds(
    Script,
    transport=st.sampled_from(["websocket", "polling", "upgrade"]),
    connect_first=st.booleans(),
    frames=st.lists(frame(), min_size=1, max_size=6).map(tuple),
    batched=st.booleans(),
)


# -- checking answers ----------------------------------------------------------------------


class BadAnswer(AssertionError):
    pass


def check_ack_args(text: str, args: Any) -> None:
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        raise BadAnswer(f"an ack that is not one object: {text[:300]!r}")
    ack = args[0]
    if ack.get("success") is True:
        if "error" in ack:
            raise BadAnswer(f"an ack with both success and error: {text[:300]!r}")
        return
    if set(ack) != {"error", "message"} or not isinstance(ack["message"], str):
        raise BadAnswer(f"a failure ack that is not {{error, message}}: {text[:300]!r}")


def _after_namespace(rest: str) -> str:
    if rest.startswith("/"):
        comma = rest.find(",")
        return "" if comma == -1 else rest[comma + 1 :]
    return rest


def check_socketio(text: str, acks: dict[int, Any]) -> None:
    """One Socket.IO packet from the server (the text after Engine.IO's ``4``)."""
    kind, rest = text[:1], text[1:]
    if kind in ("5", "6"):  # binary events/acks: attachments follow; headers only checked
        return
    rest = _after_namespace(rest)
    if kind == "0":
        body = json.loads(rest)
        if not (isinstance(body, dict) and isinstance(body.get("sid"), str)):
            raise BadAnswer(f"a CONNECT without a sid: {text[:300]!r}")
    elif kind == "4":
        body = json.loads(rest)
        if not (isinstance(body, dict) and isinstance(body.get("message"), str)):
            raise BadAnswer(f"a CONNECT_ERROR that is not {{message}}: {text[:300]!r}")
    elif kind == "3":
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if not digits:
            raise BadAnswer(f"an ack without an id: {text[:300]!r}")
        args = json.loads(rest[digits:])
        check_ack_args(text, args)
        acks[int(rest[:digits])] = args[0]
    elif kind == "2":
        body = json.loads(rest)
        if not (isinstance(body, list) and body and isinstance(body[0], str)):
            raise BadAnswer(f"an event without a name: {text[:300]!r}")
    elif kind != "1":
        raise BadAnswer(f"an unknown Socket.IO packet from the server: {text[:300]!r}")


class Session:
    """What the server has said in one session so far."""

    def __init__(self) -> None:
        self.acks: dict[int, Any] = {}
        self.closed = False

    def engineio(self, text: str) -> None:
        """One Engine.IO packet from the server (pings and noops are the caller's)."""
        kind = text[:1]
        if kind == "1":
            self.closed = True
        elif kind == "4":
            check_socketio(text[1:], self.acks)
        elif kind == "b":
            return  # a base64 binary attachment over polling
        elif kind not in ("2", "3", "6"):
            raise BadAnswer(f"an unknown Engine.IO packet from the server: {text[:300]!r}")


async def play(http: aiohttp.ClientSession, url: str, script: Script) -> Session:
    if script.transport in ("websocket", "upgrade"):
        return await _play_ws(http, url, script)
    return await _play_polling(http, url, script)


#: A barrier is sent up to this many times, each waited for this long: a half-built binary
#: packet takes the next frames for its attachments, so a barrier can be swallowed.
BARRIER_ATTEMPTS = 4
BARRIER_WAIT_S = 5.0


def _barrier(attempt: int) -> list[str]:
    return ["40", f'42{BARRIER_ID + attempt}["app:status"]']


def _barrier_answered(session: Session, attempt: int) -> bool:
    return any(BARRIER_ID + a in session.acks for a in range(attempt + 1))


async def _upgraded_ws(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A session opened over long-polling, then upgraded to websocket (probe, then ``5``)."""
    async with http.get(url + POLL_PATH) as resp:
        body = await resp.text()
        if resp.status != 200 or not body.startswith("0{"):
            raise BadAnswer(f"no OPEN packet: {resp.status} {body[:200]!r}")
    sid = json.loads(body[1:])["sid"]
    ws_url = url.replace("http://", "ws://") + f"{WS_PATH}&sid={sid}"
    ws = await http.ws_connect(ws_url, max_msg_size=0)
    await ws.send_str("2probe")
    answer = await ws.receive_str(timeout=ANSWER_TIMEOUT_S)
    if answer != "3probe":
        raise BadAnswer(f"the probe answered {answer!r}")
    await ws.send_str("5")
    return ws


async def _play_ws(http: aiohttp.ClientSession, url: str, script: Script) -> Session:
    session = Session()
    if script.transport == "upgrade":
        ws = await _upgraded_ws(http, url)
    else:
        ws = await http.ws_connect(url.replace("http://", "ws://") + WS_PATH, max_msg_size=0)
    try:
        if script.transport != "upgrade":
            opening = await ws.receive_str(timeout=ANSWER_TIMEOUT_S)
            if not opening.startswith("0{"):
                raise BadAnswer(f"no OPEN packet: {opening!r}")
        frames: list[str | bytes] = ["40"] if script.connect_first else []
        frames += script.frames
        reader = asyncio.create_task(_read_ws(ws, session))
        try:
            for item in frames:
                if ws.closed or session.closed:
                    break
                try:
                    if isinstance(item, RawText):
                        await send_raw_text(ws, item)
                    elif isinstance(item, bytes):
                        await ws.send_bytes(item)
                    else:
                        await ws.send_str(item)
                except (ConnectionError, RuntimeError):
                    break  # the server closed it
            for attempt in range(BARRIER_ATTEMPTS):
                if ws.closed or session.closed or reader.done():
                    break
                for item in _barrier(attempt):
                    try:
                        await ws.send_str(item)
                    except (ConnectionError, RuntimeError):
                        break
                deadline = time.monotonic() + BARRIER_WAIT_S
                while time.monotonic() < deadline and not reader.done():
                    if _barrier_answered(session, attempt):
                        return session
                    await asyncio.sleep(0.01)
            if not reader.done() and not session.closed:
                raise BadAnswer(f"no answer to the barrier and no close: {script!r}"[:2000])
        finally:
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            exc = reader.exception() if reader.done() and not reader.cancelled() else None
            if exc is not None:
                raise exc
    finally:
        await ws.close()
    return session


async def _read_ws(ws: aiohttp.ClientWebSocketResponse, session: Session) -> None:
    while True:
        msg = await ws.receive()
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            session.closed = True
            return
        if msg.type is aiohttp.WSMsgType.BINARY:
            continue
        text = str(msg.data)
        if text == "2":
            try:
                await ws.send_str("3")
            except (ConnectionError, RuntimeError):
                session.closed = True
                return
            continue
        session.engineio(text)
        if session.closed:
            return


async def _play_polling(http: aiohttp.ClientSession, url: str, script: Script) -> Session:
    session = Session()
    async with http.get(url + POLL_PATH) as resp:
        body = await resp.text()
        if resp.status != 200 or not body.startswith("0{"):
            raise BadAnswer(f"no OPEN packet: {resp.status} {body[:200]!r}")
    sid = json.loads(body[1:])["sid"]
    target = f"{url}{POLL_PATH}&sid={sid}"

    async def send(data: bytes) -> bool:
        async with http.post(target, data=data) as resp:
            await resp.read()
            if resp.status not in (200, 400):
                raise BadAnswer(f"POST answered {resp.status}: {data[:200]!r}")
            return resp.status == 200

    def encode(item: str | bytes) -> bytes:
        return item if isinstance(item, bytes) else item.encode()

    posts: list[bytes] = [b"40"] if script.connect_first else []
    texts = [f for f in script.frames if isinstance(f, str)]
    if script.batched and texts and len(texts) == len(script.frames):
        posts.append("\x1e".join(texts).encode())
    else:
        posts += [encode(f) for f in script.frames]
    for data in posts:
        if not await send(data):
            session.closed = True
            break
    for attempt in range(BARRIER_ATTEMPTS):
        if session.closed:
            break
        if not await send("\x1e".join(_barrier(attempt)).encode()):
            session.closed = True
            break
        deadline = time.monotonic() + BARRIER_WAIT_S
        while time.monotonic() < deadline and not session.closed:
            async with http.get(target) as resp:
                raw = await resp.read()
                if resp.status == 400:
                    session.closed = True
                    break
                if resp.status != 200:
                    raise BadAnswer(f"GET answered {resp.status}: {raw[:200]!r}")
            for packet in raw.decode().split("\x1e"):
                if packet == "2":
                    await send(b"3")
                elif packet:
                    session.engineio(packet)
            if _barrier_answered(session, attempt):
                await send(b"1")
                return session
    if not session.closed:
        raise BadAnswer(f"no answer to the barrier and no close: {script!r}"[:2000])
    return session


# -- an event loop beside a synchronous hypothesis test --------------------------------------

T = TypeVar("T")


class LoopThread:
    """An event loop in a thread: hypothesis runs its examples synchronously, the clients
    (and a canary pair) live on this loop across examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# -- a canary pair beside the fuzz ---------------------------------------------------------


class Canary:
    """A paired runner and app that keep talking while the fuzz runs: every command and
    every output must arrive, in order, with a success ack."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.runner_id = f"canary-{tag}"
        self.rounds = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        from tests.support.events import pair, register
        from tests.support.gateways import Client

        self.runner = await Client(reconnection=False).connect(self.url)
        self.app = await Client(reconnection=False).connect(self.url)
        code = (await register(self.runner, self.runner_id))["pairingCode"]
        self.app_session = (await pair(self.app, code))["appSessionId"]
        await self.runner.next("pairing:paired")
        self._task = asyncio.create_task(self._talk())

    async def _talk(self) -> None:
        try:
            while not self._stop.is_set():
                i = self.rounds
                ack = await self.app.call("app:command", {"data": f"in-{i}"})
                assert ack == {"success": True}, ("app:command", i, ack)
                got = await self.runner.next("terminal:input")
                assert got == {"appSessionId": self.app_session, "data": f"in-{i}"}, (i, got)
                ack = await self.runner.call("runner:output", {"data": f"out-{i}"})
                assert ack.get("success") is True and ack.get("delivered") == 1, (i, ack)
                got = await self.app.next("terminal:output")
                assert got == {"runnerId": self.runner_id, "data": f"out-{i}"}, (i, got)
                if i % 10 == 0:
                    ack = await self.runner.call("runner:heartbeat", {"runnerId": self.runner_id})
                    assert ack == {"success": True}, ("heartbeat", ack)
                self.rounds += 1
                await asyncio.sleep(0.02)
        except Exception as exc:  # recorded: the test fails on it after the fuzz
            self.failures.append(f"round {self.rounds}: {exc!r}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        for client in (self.app, self.runner):
            await client.close()
