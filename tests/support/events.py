"""Helpers shared by the per-event gateway tests (test_gateway_{runner,app,events,malformed})."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from pairing import keys
from tests.support.gateways import Client, emit_unacked

#: Runners stay online for the whole test without heartbeats (TEST_CONFIG's 1.5 s timeout
#: would let the sweeper unpair them in the middle of a slower test).
SLOW_HEARTBEAT: dict[str, Any] = {"heartbeat": {"timeout_s": 30, "ttl_s": 60}}

APP_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{16,128}\Z")


def app_id(tag: str) -> str:
    """A valid appSessionId (16-128 chars) that names the test's app."""
    return f"app-{tag}-0123456789abcdef"


async def stale_heartbeat(redis: Any, runner_id: str) -> None:
    """Make the runner offline (last heartbeat a minute ago) without touching its sockets."""
    await redis.set(keys.heartbeat(runner_id), str(int(time.time() * 1000) - 60_000))


def assert_error(ack: Any, code: str) -> None:
    """The contract's failure ack: exactly ``error`` and a people-readable ``message``."""
    assert isinstance(ack, dict), ack
    assert set(ack) == {"error", "message"}, ack
    assert ack["error"] == code, ack
    assert isinstance(ack["message"], str) and ack["message"], ack


async def register(client: Client, runner_id: str, **extra: Any) -> dict[str, Any]:
    ack = await client.call("runner:register", {"runnerId": runner_id, **extra})
    assert ack.get("success") is True, ack
    return ack  # type: ignore[no-any-return]


async def pair(app: Client, code: str) -> dict[str, Any]:
    ack = await app.call("app:pair", {"pairingCode": code})
    assert ack.get("success") is True, ack
    return ack  # type: ignore[no-any-return]


async def quiet(client: Client, event: str, timeout: float = 0.5) -> None:
    """Nothing more of ``event`` arrives within ``timeout`` (for 'exactly one' checks)."""
    try:
        extra = await client.next(event, timeout=timeout)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {event}: {extra!r}")


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0, every: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)


async def emit_many(client: Client, event: str, payloads: list[Any], timeout: float = 10) -> list:
    """Emit every payload without awaiting acks in between; then collect all acks in order."""
    futures = await emit_unacked(client, event, payloads)
    return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))


# -- raw Engine.IO / Socket.IO over a websocket -------------------------------------------


class RawSocket:
    """A websocket speaking Engine.IO v4 by hand: send any frame, read acks by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks: dict[int, Any] = {}
        self.other: list[str] = []
        self.closed = False

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, connect: str | None = "40"
    ) -> RawSocket:
        ws = await session.ws_connect(
            url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        )
        raw = cls(ws)
        opening = await raw.recv()
        assert opening is not None and opening.startswith("0{"), opening
        if connect is not None:
            await ws.send_str(connect)
            reply = await raw.recv()
            assert reply is not None and reply.startswith("40{"), reply
        return raw

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def recv(self, timeout: float = 10) -> str | None:
        """The next Socket.IO-level text frame (pings answered); None once closed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame in time")
            msg = await self.ws.receive(timeout=remaining)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                self.closed = True
                return None
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            text = str(msg.data)
            if text == "2":
                await self.ws.send_str("3")
                continue
            return text

    async def ack(self, ack_id: int, timeout: float = 10) -> Any:
        """Read frames until the ack ``ack_id`` arrives; returns its first argument."""
        deadline = time.monotonic() + timeout
        while ack_id not in self.acks:
            text = await self.recv(max(deadline - time.monotonic(), 0.001))
            if text is None:
                raise AssertionError(f"socket closed while waiting for ack {ack_id}")
            m = re.match(r"^43(\d+)(.*)\Z", text, re.DOTALL)
            if m is None:
                self.other.append(text)
                continue
            args = json.loads(m.group(2))
            self.acks[int(m.group(1))] = args[0] if len(args) == 1 else args
        return self.acks[ack_id]

    async def event(self, name: str, timeout: float = 10) -> Any:
        """The payload of the next server event ``name`` (other frames are kept)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, text in enumerate(self.other):
                if text.startswith("42["):
                    args = json.loads(text[2:])
                    if args[0] == name:
                        del self.other[i]
                        return args[1]
            text = await self.recv(max(deadline - time.monotonic(), 0.001))
            if text is None:
                raise AssertionError(f"socket closed while waiting for {name}")
            self.other.append(text)

    async def close(self) -> None:
        await self.ws.close()
