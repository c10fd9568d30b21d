"""What only a Redis Cluster has: keys spread over the masters, sharded fan-out, failover.

The contract's scenarios (pairing and relay across replicas, unpair on disconnect,
takeover, sweep after a SIGKILL, outages) run on a cluster too, as the second run of
tests/scenarios/test_replicas.py and tests/scenarios/test_faults.py (tests.support.backends).
Here: gateway processes on a real 3-master, 3-replica cluster (tests/support/redis_cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from redis.cluster import key_slot

from gateway.fanout import room_for_app, room_for_runner
from pairing.store import Redis
from tests.support.backends import Backend
from tests.support.gateways import TEST_CONFIG, Client, GatewayProcess
from tests.support.redis_cluster import RedisClusterProcess
from tests.support.replicas import (
    Heartbeats,
    bad_log_lines,
    pair,
    register,
    relay_both_ways,
    wait_ready,
)

Start = Callable[..., GatewayProcess]
Connect = Callable[..., Any]

#: Events never wait long here: a hang while a master fails over shows as a failure.
ACK_BOUND_S = TEST_CONFIG["store_timeout_s"] * 3 + 2


def _app_id(i: int) -> str:
    return f"cluster-app-{i:02d}-0123456789"


async def test_keys_sit_on_every_master_and_the_fan_out_uses_sharded_channels(
    redis_cluster: RedisClusterProcess,
    cluster_redis: Redis,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    backend = Backend(cluster=redis_cluster)
    layout = backend.layout
    gws = [gateway_procs(backend.url) for _ in range(3)]
    await asyncio.gather(*(wait_ready(gw) for gw in gws))
    spublish_before = backend.command_calls("spublish")
    publish_before = backend.command_calls("publish", replicas=True)
    pairs = []
    for i in range(9):
        # Runner on one replica, its app on the next: every message crosses replicas.
        runner_id = f"cluster-runner-{i}"
        runner = await clients(gws[i % 3].url)
        app = await clients(gws[(i + 1) % 3].url, auth={"appSessionId": _app_id(i)})
        await register(runner, runner_id)
        beats.start(runner, runner_id)
        await pair(app, runner, runner_id)
        await relay_both_ways(app, runner, _app_id(i), runner_id, str(i))
        pairs.append((runner_id, _app_id(i)))

    per_master = backend.keys_per_master()
    assert len(per_master) == 3
    for port, names in per_master.items():
        assert names, f"master {port} holds no key"
    every_key = {k for names in per_master.values() for k in names}
    for runner_id, app_id in pairs:
        # PairingSessionService's three key families, with their braces as hash tags.
        assert f"pairing:session:{{{app_id}}}" in every_key
        assert f"pairing:apps:{{{runner_id}}}" in every_key
        assert f"runner:heartbeat:{{{runner_id}}}" in every_key
    # Every key carries a hash tag: no script could have touched an undeclared slot.
    assert all("{" in k and "}" in k for k in every_key), sorted(every_key)

    # The fan-out: each room's channel subscribed on the master owning its slot, classic
    # pub/sub unused anywhere, and every cross-replica message one SPUBLISH.
    sharded: set[str] = set()
    for node in backend.masters():
        with backend.node_client(node) as c:
            here = set(c.execute_command("PUBSUB", "SHARDCHANNELS"))
            for channel in here:
                assert int(c.execute_command("CLUSTER", "KEYSLOT", channel)) in _slots_of(
                    c, node.port
                )
        sharded |= here
    for runner_id, app_id in pairs:
        assert layout.room_channel(room_for_runner(runner_id)) in sharded
        assert layout.room_channel(room_for_app(app_id)) in sharded
    for node in backend.nodes():
        with backend.node_client(node) as c:
            assert c.execute_command("PUBSUB", "CHANNELS") == []
    assert backend.command_calls("publish", replicas=True) == publish_before
    # (9 pairings, 9 commands, 9 outputs, all across replicas)
    assert backend.command_calls("spublish") - spublish_before >= 27
    for gw in gws:
        assert bad_log_lines(gw) == []


def _slots_of(c: Any, port: int) -> set[int]:
    slots: set[int] = set()
    for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
        if int(master[1]) == port:
            slots.update(range(int(start), int(end) + 1))
    return slots


class Stream:
    """Sends one relayed message at a time until stopped, recording each ack."""

    def __init__(self, client: Client, event: str, tag: str) -> None:
        self.client, self.event, self.tag = client, event, tag
        self.sent: list[tuple[str, Any, float]] = []
        self._stop = asyncio.Event()
        self._go = asyncio.Event()
        self._go.set()
        self._parked = asyncio.Event()
        self._sent = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            if not self._go.is_set():
                self._parked.set()
                await self._go.wait()
                self._parked.clear()
            data = f"{self.tag}{i}"
            started = time.monotonic()
            try:
                ack = await self.client.call(self.event, {"data": data}, timeout=30)
            except TimeoutError:
                ack = "no ack"
            self.sent.append((data, ack, time.monotonic() - started))
            async with self._sent:
                self._sent.notify_all()
            i += 1
            await asyncio.sleep(0.01)

    async def pause(self) -> None:
        """No more sends after the one in flight (returns once it was acked)."""
        self._go.clear()
        await asyncio.wait_for(self._parked.wait(), 20)

    def resume(self) -> None:
        self._go.set()

    async def wait_sent(self, n: int) -> None:
        async with self._sent:
            await asyncio.wait_for(self._sent.wait_for(lambda: len(self.sent) >= n), 20)

    def ok(self, ack: Any) -> bool:
        return isinstance(ack, dict) and ack.get("success") is True

    def recovered(self, n: int) -> bool:
        """The last ``n`` sends succeeded."""
        return len(self.sent) >= n and all(self.ok(a) for _, a, _ in self.sent[-n:])

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _drain(client: Client, event: str) -> list[dict[str, Any]]:
    """What ``client`` got of ``event`` so far, with seqs; its queues emptied."""
    out = []
    while not client.raw[event].empty():
        out.append(client.raw[event].get_nowait())
    while not client.queues[event].empty():
        client.queues[event].get_nowait()
    return out


def _drain_plain(client: Client, event: str) -> list[dict[str, Any]]:
    out = []
    while not client.queues[event].empty():
        out.append(client.queues[event].get_nowait())
    return out


async def _until(client: Client, event: str, data: str) -> None:
    """Wait until ``client`` has got ``data`` (a barrier: what was sent before it came)."""
    async with asyncio.timeout(20):
        while True:
            raw = [*client.raw[event]._queue]  # type: ignore[attr-defined]
            if any(m.get("data") == data for m in raw):
                return
            await asyncio.sleep(0.05)


def _subscribed(backend: Backend, channel: str) -> bool:
    """A replica's listener is subscribed to ``channel`` on the master owning it now."""
    owner = _master_of(backend, channel)
    with backend.node_client(owner) as c:
        return int(c.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1]) >= 1


def _master_of(backend: Backend, key: str) -> Any:
    slot = key_slot(key.encode())
    for node in backend.masters():
        with backend.node_client(node) as c:
            if slot in _slots_of(c, node.port):
                return node
    raise AssertionError(f"no master serves {key!r}")


async def test_a_master_killed_mid_traffic_fails_over_and_the_relay_resumes(
    own_cluster: RedisClusterProcess,
    gateway_procs: Start,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    backend = Backend(cluster=own_cluster)
    app_id = _app_id(99)
    # A failover takes about 2 s here (node timeout 1 s, then the election): the heartbeat
    # timeout must outlast it, or runners on the failed master's slots look offline
    # meanwhile (docs/deploy.md says the same for production).
    config = {"heartbeat": {"timeout_s": 5, "ttl_s": 10}}
    a, b = gateway_procs(backend.url, config), gateway_procs(backend.url, config)
    runner = await clients(a.url)
    app = await clients(b.url, auth={"appSessionId": app_id})
    await register(runner, "r-failover")
    beats.start(runner, "r-failover")
    await pair(app, runner, "r-failover")
    await relay_both_ways(app, runner, app_id, "r-failover", "before")
    _drain(app, "terminal:output"), _drain(runner, "terminal:input")

    outputs = Stream(runner, "runner:output", "o")
    inputs = Stream(app, "app:command", "i")
    await outputs.wait_sent(30)
    await inputs.wait_sent(30)
    # Everything so far replicated; then the master goes while both streams run.
    await asyncio.gather(outputs.pause(), inputs.pause())
    await asyncio.to_thread(own_cluster.wait_replicated)
    replicated = {outputs.tag: len(outputs.sent), inputs.tag: len(inputs.sent)}
    outputs.resume()
    inputs.resume()
    await asyncio.gather(
        outputs.wait_sent(replicated["o"] + 5), inputs.wait_sent(replicated["i"] + 5)
    )
    # The master serving the app's slot: its session, seq counters and holds.
    killed = own_cluster.kill_master(_master_of(backend, app_id))
    await asyncio.to_thread(own_cluster.wait_promoted, killed)
    # The replicas' listeners resubscribe the killed master's rooms on the promoted replica
    # (the rooms of the other masters never stopped); a message published before that is
    # lost to the connection (a gap, held for a resume), one published after it arrives.
    layout = backend.layout
    rooms = [layout.room_channel(room_for_app(app_id)), layout.room_channel("runner:r-failover")]
    deadline = time.monotonic() + 30
    while not all([await asyncio.to_thread(_subscribed, backend, c) for c in rooms]):
        assert time.monotonic() < deadline, "the rooms were not subscribed again"
        await asyncio.sleep(0.05)
    resubscribed = {outputs.tag: len(outputs.sent), inputs.tag: len(inputs.sent)}
    deadline = time.monotonic() + 30
    while not (
        outputs.recovered(20)
        and inputs.recovered(20)
        and len(outputs.sent) >= resubscribed["o"] + 20
        and len(inputs.sent) >= resubscribed["i"] + 20
    ):
        assert time.monotonic() < deadline, (outputs.sent[-5:], inputs.sent[-5:])
        await asyncio.sleep(0.05)
    await outputs.stop()
    await inputs.stop()
    # Both replicas ready again: their fan-out listeners are subscribed on the new map.
    await asyncio.gather(wait_ready(a), wait_ready(b))
    # Barriers: once these arrive, everything relayed before them has.
    assert (await runner.call("runner:output", {"data": "o-end"}))["success"] is True
    assert await app.call("app:command", {"data": "i-end"}) == {"success": True}
    await _until(app, "terminal:output", "o-end")
    await _until(runner, "terminal:input", "i-end")

    for stream, client, event in (
        (outputs, app, "terminal:output"),
        (inputs, runner, "terminal:input"),
    ):
        # Every ack came within the bound, a success or UNAVAILABLE (never a hang or INTERNAL).
        for data, ack, took in stream.sent:
            assert stream.ok(ack) or ack.get("error") == "UNAVAILABLE", (data, ack)
            assert took < ACK_BOUND_S, (data, took)
        got = [m for m in _drain(client, event) if m["data"][-4:] != "-end"]
        order = [d for d, _, _ in stream.sent]
        positions = [order.index(m["data"]) for m in got]
        # In order, each at most once, with rising seqs: a failover may lose messages
        # (those the old master had not yet replicated), never reorder or repeat them.
        assert positions == sorted(set(positions)), positions
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(set(seqs))
        # A seq the connection skipped (relayed while its replica resubscribed) was
        # announced by terminal:gap: together they cover every seq, none twice.
        covered = list(seqs)
        gaps = _drain_plain(client, "terminal:gap")
        for gap in gaps:
            covered += range(gap["fromSeq"], gap["toSeq"] + 1)
        assert sorted(covered) == list(range(seqs[0], seqs[-1] + 1)), (seqs, covered)
        acked = [d for d, ack, _ in stream.sent if stream.ok(ack)]
        lost = sorted(set(acked) - {m["data"] for m in got}, key=order.index)
        print(
            f"\n{event}: {len(stream.sent)} sent, {len(acked)} acked, "
            f"{len(got)} delivered, gaps {gaps}, acked but lost: {lost}"
        )
        # Everything acked before the replicas had caught up, and after the rooms were
        # subscribed again, came.
        assert not [d for d in lost if order.index(d) < replicated[stream.tag]]
        assert not [d for d in lost if order.index(d) >= resubscribed[stream.tag]]

    await relay_both_ways(app, runner, app_id, "r-failover", "after")
    await beats.stop()

    # The hold survived the failover: an app coming back with lastSeq gets the held output
    # that was replicated before the kill, from the promoted replica.
    back = await clients(a.url, auth={"appSessionId": app_id, "lastSeq": 0})
    replay: list[str] = []
    while len(replay) < 30:
        replay.append((await back.next("terminal:output"))["data"])
    assert replay[:1] == ["out-before"]
    assert replay[1:30] == [f"o{i}" for i in range(29)]
    for gw in (a, b):
        assert gw.proc is not None and gw.proc.poll() is None
        await wait_ready(gw)
        assert bad_log_lines(gw) == []
