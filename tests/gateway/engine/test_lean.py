"""The lean engineio pieces keep asyncio.Queue's and engineio's semantics."""

from __future__ import annotations

import asyncio
import logging

import pytest
from engineio import exceptions, packet

from gateway.engine.queue import LeanQueue
from gateway.engine.socket import LeanSocket


async def test_fifo_and_get_waits_for_put() -> None:
    q = LeanQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    await q.put("a")
    q.put_nowait("b")
    assert await getter == "a"
    assert q.qsize() == 1
    assert q.get_nowait() == "b"
    assert q.empty()
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_idle_queue_holds_no_deque() -> None:
    q = LeanQueue()
    q.put_nowait(1)
    q.get_nowait()
    assert q._items is None


async def test_join_waits_for_every_task_done() -> None:
    q = LeanQueue()
    q.put_nowait(1)
    q.put_nowait(2)
    joined = asyncio.ensure_future(q.join())
    q.get_nowait()
    q.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    q.get_nowait()
    q.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        q.task_done()


async def test_a_cancelled_get_leaves_no_getter_and_loses_nothing() -> None:
    q = LeanQueue()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await q.get()
    assert not q._getters
    q.put_nowait("kept")
    assert await q.get() == "kept"


class _Server:
    ping_interval = 0.05
    ping_timeout = 0.05
    max_buffered_bytes = 4_194_304
    on_slow_reader = None


def _socket() -> LeanSocket:
    sock = LeanSocket.__new__(LeanSocket)
    sock.server = _Server()
    sock.queue = LeanQueue()
    sock.closing = sock.closed = False
    sock.last_ping = None
    return sock


async def test_poll_batches_and_stops_at_the_close_marker() -> None:
    sock = _socket()
    first, second = packet.Packet(packet.MESSAGE, "1"), packet.Packet(packet.MESSAGE, "2")
    for item in (first, second, None):
        sock.queue.put_nowait(item)
    assert await sock.poll() == [first, second]
    # the marker was put back: the next poll ends with a noop, as an Engine.IO v4 GET
    # pending when the client's close packet arrives does
    assert [p.packet_type for p in await sock.poll()] == [packet.NOOP]


async def test_poll_times_out_as_queue_empty() -> None:
    with pytest.raises(exceptions.QueueEmpty):
        await _socket().poll()


async def test_ping_cycle_is_a_timer_only_after_a_pong() -> None:
    sock = _socket()
    sock.schedule_ping()  # last_ping is None: a ping is outstanding, nothing scheduled
    await asyncio.sleep(0.08)
    assert sock.queue.empty()
    sock.last_ping = 1.0  # a pong arrived for the previous ping
    sock.schedule_ping()
    got = await asyncio.wait_for(sock.queue.get(), 1)
    assert got.packet_type == packet.PING
    assert sock.last_ping is not None and sock.last_ping > 1.0


class _Reason:
    PING_TIMEOUT = "ping timeout"
    SERVER_DISCONNECT = "server disconnect"


class _TimingServer(_Server):
    reason = _Reason
    logger = logging.getLogger("test_lean")

    def __init__(self) -> None:
        self.sockets: dict[str, LeanSocket] = {}
        self.disconnects: list[tuple[str, str]] = []

    async def _trigger_event(self, event: str, sid: str, reason: str, run_async: bool) -> None:
        self.disconnects.append((sid, reason))


def _timed_socket() -> tuple[LeanSocket, _TimingServer]:
    server = _TimingServer()
    sock = _socket()
    sock.server = server
    sock.sid = "s1"
    sock.last_ping = 1.0  # as engineio starts a socket: its first ping is due
    server.sockets["s1"] = sock
    return sock, server


async def test_a_missed_pong_ends_the_socket_once_with_ping_timeout() -> None:
    sock, server = _timed_socket()
    sock.schedule_ping()
    ping = await asyncio.wait_for(sock.queue.get(), 1)
    assert ping.packet_type == packet.PING
    # no pong: after ping_timeout the socket is closed, dropped, and its writer woken
    # (after a CLOSE packet, unless engineio's own check already judged the client gone)
    last = await asyncio.wait_for(sock.queue.get(), 1)
    if last is not None:
        assert last.packet_type == packet.CLOSE
        last = await asyncio.wait_for(sock.queue.get(), 1)
    assert last is None
    assert sock.closed
    assert server.disconnects == [("s1", "ping timeout")]
    assert "s1" not in server.sockets
    await asyncio.sleep(0.15)  # no second timeout, no further ping
    assert server.disconnects == [("s1", "ping timeout")]
    assert sock.queue.empty()


async def test_pongs_keep_the_socket_open_across_ping_cycles() -> None:
    sock, server = _timed_socket()
    sock.schedule_ping()
    for _ in range(4):  # 4 cycles of 0.05 + 0.05 s: long past any one deadline
        ping = await asyncio.wait_for(sock.queue.get(), 1)
        assert ping.packet_type == packet.PING
        await asyncio.sleep(0.03)
        sock.schedule_ping()  # what receive() does with a PONG
    assert not sock.closed and server.disconnects == []
    await sock.close(wait=False, abort=True)
    assert sock._timer is None  # closing stops the cycle
    assert server.disconnects == [("s1", "server disconnect")]
