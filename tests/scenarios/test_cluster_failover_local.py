"""A master's failover is local: rooms on the other masters keep relaying through it.

Three masters with their replicas (``cluster-node-timeout`` 2 s), two gateway processes, an
app on one and its runner on the other, every key and room channel of both on master A.
A second pair's rooms are on master B, which is SIGKILLed while both directions of the
first pair stream; A's pair must lose nothing: every
acked ``app:command`` reaches the runner and every acked ``runner:output`` the app, once,
in order, with consecutive seqs and no ``terminal:gap``; and ``/readyz`` of both gateways
answers 200 throughout the failover. How long the pair's traffic paused
(the longest silence at each receiver around the kill, beside the same before it) is
printed, not asserted: speed is measured, not tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from pairing import keys
from tests.support.backends import Backend
from tests.support.gateways import Client, GatewayProcess
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.redis_server import RedisProcess
from tests.support.replicas import (
    Heartbeats,
    bad_log_lines,
    get_status,
    pair,
    register,
    wait_ready,
)

Start = Callable[..., GatewayProcess]
Connect = Callable[..., Any]

#: One message each way every 20 ms: 50/s in each direction.
PACE_S = 0.02


@pytest.fixture
def slow_failover_cluster() -> Iterator[RedisClusterProcess]:
    """A cluster of its own whose masters fail over as production ones do (2 s timeout)."""
    cluster = RedisClusterProcess(node_timeout_ms=2000)
    cluster.start()
    yield cluster
    cluster.close()


def _slots(cluster: RedisClusterProcess, node: RedisProcess) -> set[int]:
    slots: set[int] = set()
    with cluster.client(node) as c:
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if int(master[1]) == node.port:
                slots.update(range(int(start), int(end) + 1))
    return slots


def _ids_on(slots: set[int]) -> tuple[str, str]:
    """An appSessionId and a runnerId whose keys (and the runner's index shard) and room
    channels are all in ``slots``."""
    layout = keys.CLUSTER
    app = next(
        f"local-app-{i:04d}-0123456789"
        for i in range(100_000)
        if key_slot(f"local-app-{i:04d}-0123456789".encode()) in slots
    )
    runner = next(
        f"local-runner-{i}"
        for i in range(100_000)
        if key_slot(layout.heartbeat(f"local-runner-{i}").encode()) in slots
        and key_slot(layout.last_seen(f"local-runner-{i}").encode()) in slots
    )
    for key in (layout.session(app), layout.room_channel(f"app:{app}")):
        assert key_slot(key.encode()) in slots, key
    for key in (layout.runner_apps(runner), layout.room_channel(f"runner:{runner}")):
        assert key_slot(key.encode()) in slots, key
    return app, runner


class Timed:
    """Arrival times of one relayed event at one client (its recorder still records)."""

    def __init__(self, client: Client, event: str) -> None:
        self.times: list[float] = []
        record = client._recorder(event)

        async def handler(*args: Any) -> None:
            self.times.append(time.monotonic())
            await record(*args)

        client.sio.on(event, handler)

    def longest_silence(self, start: float, end: float) -> float:
        inside = [t for t in self.times if start <= t <= end]
        stamps = [start, *inside, end]
        return max(b - a for a, b in itertools.pairwise(stamps))


class Sender:
    """Sends ``event`` every ``PACE_S`` (after the previous ack), recording each ack."""

    def __init__(self, client: Client, event: str, tag: str) -> None:
        self.client, self.event, self.tag = client, event, tag
        self.sent: list[tuple[str, Any, float]] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        due = time.monotonic()
        while not self._stop.is_set():
            data = f"{self.tag}{i}"
            started = time.monotonic()
            try:
                ack = await self.client.call(self.event, {"data": data}, timeout=30)
            except TimeoutError:
                ack = "no ack"
            self.sent.append((data, ack, time.monotonic() - started))
            i += 1
            due = max(due + PACE_S, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    def acked(self) -> list[str]:
        return [d for d, ack, _ in self.sent if isinstance(ack, dict) and ack.get("success")]

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _probe_ready(
    gateways: list[GatewayProcess], seen: list[tuple[float, int, dict[str, Any]]]
) -> None:
    """Ask every gateway's /readyz every 100 ms until cancelled; (time, status, body) each."""
    while True:
        for gw in gateways:
            status, body = await get_status(gw.url + "/readyz", timeout=5)
            seen.append((time.monotonic(), status, body))
        await asyncio.sleep(0.1)


async def _until_end(client: Client, event: str) -> None:
    """Until ``client`` has got the barrier message of ``event`` (it polls the queue,
    which the recorder fills, without taking from it)."""
    async with asyncio.timeout(20):
        while not any(m["data"].endswith("-end") for m in [*client.raw[event]._queue]):  # type: ignore[attr-defined]  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def _drain(client: Client, event: str) -> list[dict[str, Any]]:
    out = []
    while not client.raw[event].empty():
        out.append(client.raw[event].get_nowait())
    return out


async def test_a_master_killed_pauses_nothing_on_the_other_masters(
    slow_failover_cluster: RedisClusterProcess,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    cluster = slow_failover_cluster
    backend = Backend(cluster=cluster)
    masters = cluster.master_nodes()
    home, victim = masters[0], masters[1]
    app_id, runner_id = _ids_on(_slots(cluster, home))
    # A pair whose rooms are on the victim: both replicas hold a room there.
    other_app, other_runner = _ids_on(_slots(cluster, victim))
    config = {"heartbeat": {"timeout_s": 10, "ttl_s": 20}}
    a, b = gateway_procs(backend.url, config), gateway_procs(backend.url, config)
    runner = await clients(a.url)
    app = await clients(b.url, auth={"appSessionId": app_id})
    inputs_at = Timed(runner, "terminal:input")
    outputs_at = Timed(app, "terminal:output")
    await register(runner, runner_id)
    beats.start(runner, runner_id)
    await pair(app, runner, runner_id)
    runner_b = await clients(a.url)
    app_b = await clients(b.url, auth={"appSessionId": other_app})
    await register(runner_b, other_runner)
    beats.start(runner_b, other_runner)
    await pair(app_b, runner_b, other_runner)

    commands = Sender(app, "app:command", "c")
    outputs = Sender(runner, "runner:output", "o")
    await asyncio.sleep(3)  # steady traffic, the baseline
    baseline_end = time.monotonic()
    killed_at = time.monotonic()
    cluster.kill_master(victim)
    readiness: list[tuple[float, int, dict[str, Any]]] = []
    probing = asyncio.create_task(_probe_ready([a, b], readiness))
    await asyncio.to_thread(cluster.wait_promoted, victim)
    promoted_at = time.monotonic()
    probing.cancel()
    answers = await asyncio.gather(probing, return_exceptions=True)
    # /readyz stayed 200 on both replicas from the kill to the promotion: they could serve
    # every slot that was up (checked every 100 ms).
    assert readiness, answers
    assert [(t, status, body) for t, status, body in readiness if status != 200] == []
    await asyncio.sleep(2)  # and some traffic after the promotion
    await commands.stop()
    await outputs.stop()
    end = time.monotonic()
    await asyncio.gather(wait_ready(a), wait_ready(b))

    # Barriers: everything relayed before them has arrived once they have.
    assert await app.call("app:command", {"data": "c-end"}) == {"success": True}
    assert (await runner.call("runner:output", {"data": "o-end"}))["success"] is True
    for client, event in ((runner, "terminal:input"), (app, "terminal:output")):
        await _until_end(client, event)

    for sender, client, event, timed in (
        (commands, runner, "terminal:input", inputs_at),
        (outputs, app, "terminal:output", outputs_at),
    ):
        got = [m for m in _drain(client, event) if not m["data"].endswith("-end")]
        order = [d for d, _, _ in sender.sent]
        delivered = [m["data"] for m in got]
        acked = sender.acked()
        errors = [(d, ack) for d, ack, _ in sender.sent if d not in set(acked)]
        # Once each, in the order sent, with consecutive seqs: nothing skipped or repeated.
        assert len(delivered) == len(set(delivered))
        positions = [order.index(d) for d in delivered]
        assert positions == sorted(positions)
        seqs = [m["seq"] for m in got]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        # Every acked message arrived (an error ack, which this pair's healthy master should
        # not cause, would be allowed to arrive or not).
        assert set(acked) <= set(delivered), sorted(set(acked) - set(delivered))
        assert not client.queues["terminal:gap"].qsize(), "a gap was announced"
        before = timed.longest_silence(killed_at - 3, baseline_end)
        around = timed.longest_silence(killed_at, promoted_at)
        after = timed.longest_silence(promoted_at, end)
        slowest = max(took for _, _, took in sender.sent)
        print(
            f"\n{event}: {len(order)} sent, {len(acked)} acked, {len(delivered)} delivered, "
            f"errors {errors[:5]}; longest silence before the kill {before * 1000:.0f} ms, "
            f"from the kill to the promotion ({promoted_at - killed_at:.1f} s) "
            f"{around * 1000:.0f} ms, after {after * 1000:.0f} ms; slowest ack "
            f"{slowest * 1000:.0f} ms"
        )
    await beats.stop()
    for gw in (a, b):
        assert gw.proc is not None and gw.proc.poll() is None
        assert bad_log_lines(gw) == []
