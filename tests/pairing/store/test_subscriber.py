"""pairing.store.subscriber: the fan-out's pub/sub connection, on a real server and on memory://."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pairing.store import Redis
from pairing.store.subscriber import PubSubSubscriber, RespSubscriber, Subscriber, subscriber_for


class Replies:
    """Reads ``sub``; keeps the rest of a batch for the next call."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.buffered: list[list[Any]] = []

    async def next(self, kind: bytes) -> list[Any]:
        """The next reply of ``kind``; replies of other kinds before it are skipped."""
        async with asyncio.timeout(5):
            while True:
                while self.buffered:
                    reply = self.buffered.pop(0)
                    if reply[0] == kind:
                        return reply
                self.buffered.extend(await self.sub.read())


async def test_the_right_subscriber_for_the_store(store: Redis) -> None:
    sub = subscriber_for(store)
    expected = (
        PubSubSubscriber if type(store).__module__.startswith("fakeredis") else RespSubscriber
    )
    assert isinstance(sub, expected)


async def test_subscribe_receive_in_order_ping_and_unsubscribe(store: Redis) -> None:
    sub = subscriber_for(store)
    replies = Replies(sub)
    _next = replies.next
    try:
        await sub.connect()
        sub.subscribe("ch-a", "ch-b")
        await _next(b"subscribe")
        for i in range(50):
            await store.publish("ch-a" if i % 2 else "ch-b", f"m{i}".encode())
        got: list[bytes] = []
        while len(got) < 50:
            got.append((await _next(b"message"))[2])
        assert got == [f"m{i}".encode() for i in range(50)]
        sub.ping()
        await _next(b"pong")
        sub.unsubscribe("ch-a")
        await _next(b"unsubscribe")
        await store.publish("ch-a", b"not for us")
        await store.publish("ch-b", b"still ours")
        assert (await _next(b"message"))[1:] == [b"ch-b", b"still ours"]
    finally:
        await sub.aclose()


async def test_abort_breaks_a_pending_read(store: Redis) -> None:
    sub = subscriber_for(store)
    try:
        await sub.connect()
        sub.subscribe("ch-quiet")
        await Replies(sub).next(b"subscribe")
        reading = asyncio.ensure_future(sub.read())
        await asyncio.sleep(0)  # the read is waiting
        sub.abort()
        with pytest.raises((RedisConnectionError, ConnectionError, OSError)):
            async with asyncio.timeout(5):
                await reading
    finally:
        await sub.aclose()
