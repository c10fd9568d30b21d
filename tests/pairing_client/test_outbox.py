"""The outbox: order, resend of what was not acked, retry after a retryable refusal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pairing_client.connection import Ack, Outbox


class FakeSocket:
    """Records emits; the test answers their acks (or never does: the connection died)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], Callable[..., None]]] = []
        self.emitted = asyncio.Event()

    async def emit(
        self, event: str, payload: dict[str, Any], callback: Callable[..., None]
    ) -> None:
        self.sent.append((event, payload, callback))
        self.emitted.set()

    def data(self) -> list[Any]:
        return [payload["data"] for _, payload, _ in self.sent]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def run_with(outbox: Outbox) -> asyncio.Task[None]:
    task = asyncio.create_task(outbox.run())
    await settle()
    return task


async def test_unacked_events_are_emitted_again_on_the_next_connection_in_order() -> None:
    refused: list[Ack] = []
    outbox = Outbox(resend=True, on_refused=lambda e, a: refused.append(a))
    task = await run_with(outbox)
    first = FakeSocket()
    outbox.attach(first)
    for i in range(4):
        outbox.put("app:command", {"data": i})
    await settle()
    assert first.data() == [0, 1, 2, 3]
    first.sent[0][2]({"success": True})
    first.sent[1][2]({"success": True})
    outbox.detach()  # 2 and 3 were written into a dying connection
    outbox.put("app:command", {"data": 4})
    second = FakeSocket()
    outbox.attach(second)
    await settle()
    assert second.data() == [2, 3, 4]
    assert outbox.resent == 2
    for _, _, ack in second.sent:
        ack({"success": True})
    await settle()
    assert outbox.pending == 0 and refused == []
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_retryable_refusal_is_emitted_again_with_what_followed() -> None:
    outbox = Outbox(resend=True, on_refused=lambda e, a: None, retry_s=0.01)
    task = await run_with(outbox)
    sock = FakeSocket()
    outbox.attach(sock)
    for i in range(3):
        outbox.put("app:command", {"data": i})
    await settle()
    sock.sent[0][2]({"success": True})
    sock.sent[1][2]({"error": "UNAVAILABLE", "message": "store"})
    sock.sent[2][2]({"success": True})  # relayed: the receiver drops it if it comes again
    while len(sock.sent) < 4:
        sock.emitted.clear()
        await asyncio.wait_for(sock.emitted.wait(), 5)
    assert sock.data()[3] == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_other_refusals_are_reported_and_dropped() -> None:
    refused: list[tuple[str, Ack]] = []
    outbox = Outbox(resend=True, on_refused=lambda e, a: refused.append((e, a)))
    task = await run_with(outbox)
    sock = FakeSocket()
    outbox.attach(sock)
    outbox.put("app:command", {"data": 0})
    await settle()
    sock.sent[0][2]({"error": "NOT_PAIRED", "message": "no pairing"})
    await settle()
    assert refused == [("app:command", {"error": "NOT_PAIRED", "message": "no pairing"})]
    assert outbox.pending == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_without_resend_an_event_is_emitted_once() -> None:
    outbox = Outbox(resend=False, on_refused=lambda e, a: None)
    task = await run_with(outbox)
    first = FakeSocket()
    outbox.attach(first)
    outbox.put("app:command", {"data": "ls"})
    await settle()
    outbox.detach()
    second = FakeSocket()
    outbox.attach(second)
    await settle()
    assert first.data() == ["ls"] and second.data() == []
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
