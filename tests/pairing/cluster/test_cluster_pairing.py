"""The pairing core on the cluster key layout: every operation as single-slot steps.

Each behaviour runs on a real 3-master Redis Cluster (which refuses a script whose keys span
slots, so these prove the steps CROSSSLOT-free) and on the embedded store with the same
layout. Then every operation is aborted between each two of its steps, and what a client
can observe is checked, before and after the readers and the sweeper repair what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis.asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from pairing import HistoryEvent, PairStatus, RedeemStatus
from pairing.store import Redis, connect
from pairing.store.cluster import cluster_client
from tests.support.cluster_pairing import (
    LAYOUT,
    Replica,
    beat,
    give_code,
    observable_problems,
    read_state,
    replica,
    sweep_all,
)
from tests.support.paths import ROOT
from tests.support.redis_cluster import RedisClusterProcess

_memory = 0
T = TypeVar("T")


async def flushed_cluster(cluster: RedisClusterProcess) -> Redis:
    client = cluster_client(cluster.url)
    await client.initialize()
    await client.flushall(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)
    return client  # type: ignore[return-value]


@pytest.fixture(params=["cluster", "memory"])
async def cluster_layout_store(
    request: pytest.FixtureRequest, redis_cluster: RedisClusterProcess
) -> AsyncIterator[Redis]:
    """A client for the cluster key layout: on the session's Redis Cluster (flushed) and, as a
    second run, on the embedded store."""
    global _memory
    if request.param == "cluster":
        client = await flushed_cluster(redis_cluster)
    else:
        _memory += 1
        client = connect(f"memory://cluster-layout-{_memory}")
    yield client
    await client.aclose()


# -- behaviour: the same outcomes as on one Redis ---------------------------------------------


async def test_pair_moves_unpair_and_remove_all(cluster_layout_store: Redis) -> None:
    svc = replica(cluster_layout_store).sessions
    await beat(cluster_layout_store, "r1")
    assert await svc.pair("a1", "r1") is None
    assert await svc.pair("a1", "r2") == "r1"  # moved: leaves r1's set
    await svc.create_session("a2", "r2")
    assert await svc.get_apps_by_runner_id("r1") == []
    assert await svc.get_apps_by_runner_id("r2") == ["a1", "a2"]
    assert (await read_state(cluster_layout_store)).sets == {"r2": {"a1", "a2"}}
    status = await svc.get_session_status("a1")
    assert status.session is not None and status.session.runner_id == "r2"
    assert not status.runner_online  # r2 never beat
    await svc.pair("a3", "r1")
    assert (await svc.get_session_status("a3")).runner_online
    assert await svc.unpair("a3") == "r1"
    assert await svc.unpair("a3") is None
    assert await svc.remove_all_sessions_for_runner("r2") == ["a1", "a2"]
    assert await svc.get_session("a1") is None
    assert await svc.remove_all_sessions_for_runner("r2") == []
    state = await read_state(cluster_layout_store)
    assert state.sessions == {} and not any(state.sets.values()) and not state.tokens


async def test_remove_all_keeps_apps_paired_elsewhere_since(cluster_layout_store: Redis) -> None:
    svc = replica(cluster_layout_store).sessions
    await svc.pair("a1", "r1")
    await svc.pair("a2", "r1")
    # a1's session names r2, but r1's set still lists it (as an operation interrupted
    # before leaving r1's set would leave it).
    await cluster_layout_store.sadd(LAYOUT.runner_apps("r1"), "a1")
    await cluster_layout_store.set(
        LAYOUT.session("a1"), '{"appSessionId":"a1","runnerId":"r2","pairedAt":1,"isActive":true}'
    )
    await cluster_layout_store.sadd(LAYOUT.runner_apps("r2"), "a1")
    assert await svc.get_apps_by_runner_id("r1") == ["a2"]  # filtered by the session
    assert await svc.remove_all_sessions_for_runner("r1") == ["a2"]
    assert (await svc.get_session("a1")) is not None


async def test_app_pairing_outcomes_and_history(cluster_layout_store: Redis) -> None:
    rep = replica(cluster_layout_store)
    await beat(cluster_layout_store, "r1")
    await beat(cluster_layout_store, "r2")
    await give_code(cluster_layout_store, "r1", "CODE1")
    await give_code(cluster_layout_store, "r2", "code2")
    first = await rep.pairing.pair("CODE1", "a1", address="1.2.3.4")
    assert (first.status, first.runner_id, first.previous_runner_id) == (
        PairStatus.PAIRED,
        "r1",
        None,
    )
    assert await rep.codes.lookup("CODE1") is None  # spent
    assert await cluster_layout_store.get(LAYOUT.runner_code("r1")) is None
    moved = await rep.pairing.pair("Code2", "a1", address="1.2.3.4")
    assert (moved.status, moved.runner_id, moved.previous_runner_id) == (
        PairStatus.PAIRED,
        "r2",
        "r1",
    )
    assert await rep.sessions.get_apps_by_runner_id("r1") == []
    # An offline runner's code stays valid and counts no failure.
    await beat(cluster_layout_store, "r3", age_ms=60_000)
    await give_code(cluster_layout_store, "r3", "CODE3")
    offline = await rep.pairing.pair("CODE3", "a2", address="1.2.3.4")
    assert (offline.status, offline.runner_id) == (PairStatus.RUNNER_OFFLINE, "r3")
    assert await rep.codes.lookup("CODE3") == "r3"
    assert await rep.sessions.get_apps_by_runner_id("r3") == []
    assert await rep.pairing.unpair("a1") == "r2"
    assert await rep.pairing.unpair("a1") is None
    events = [(e.event, e.runner_id, e.reason) for e in reversed(await rep.history.recent())]
    assert events == [
        (HistoryEvent.PAIRED, "r1", None),
        (HistoryEvent.UNPAIRED, "r1", "REPAIRED"),
        (HistoryEvent.PAIRED, "r2", None),
        (HistoryEvent.PAIR_FAILED, "r3", "RUNNER_OFFLINE"),
        (HistoryEvent.UNPAIRED, "r2", "APP_UNPAIR"),
    ]


async def test_failed_pairs_are_counted_until_the_limit(cluster_layout_store: Redis) -> None:
    rep = replica(cluster_layout_store)
    await beat(cluster_layout_store, "r1")
    await give_code(cluster_layout_store, "r1", "GOOD")
    for _ in range(rep.pairing.rate_limit.limit):
        outcome = await rep.pairing.pair("WRONG", "a1", address="5.6.7.8")
        assert outcome.status is PairStatus.INVALID_CODE
    assert (await rep.pairing.pair("bad!", "a2", address="9.9.9.9", code_shaped=False)).status is (
        PairStatus.INVALID_CODE
    )
    limited = await rep.pairing.pair("GOOD", "a1", address="5.6.7.8")
    assert limited.status is PairStatus.RATE_LIMITED
    assert await rep.codes.lookup("GOOD") == "r1"  # not even looked at
    failed = [e for e in await rep.history.recent() if e.event == HistoryEvent.PAIR_FAILED]
    assert len(failed) == rep.pairing.rate_limit.limit + 1


async def test_codes_redeem_consume_lookup(cluster_layout_store: Redis) -> None:
    codes = replica(cluster_layout_store).codes
    await beat(cluster_layout_store, "r1")
    await give_code(cluster_layout_store, "r1", "ABC")
    assert await codes.lookup("abc") == "r1"
    result = await codes.redeem("abc", "a1")
    assert (result.status, result.runner_id) == (RedeemStatus.PAIRED, "r1")
    assert (await codes.redeem("ABC", "a2")).status is RedeemStatus.INVALID_CODE
    await give_code(cluster_layout_store, "r1", "XYZ")
    assert await codes.consume("xyz") == "r1"
    assert await codes.consume("XYZ") is None
    assert await cluster_layout_store.get(LAYOUT.runner_code("r1")) is None


async def test_a_replaced_code_left_behind_by_an_interrupted_registration_pairs_no_one(
    cluster_layout_store: Redis,
) -> None:
    """A registration that issued a new code and stopped before dropping the old one leaves
    the old code's key naming the runner: redeeming it must not pair (the runner shows
    the new code only), and must not spend or disturb the current one."""
    codes = replica(cluster_layout_store).codes
    await beat(cluster_layout_store, "r1")
    await give_code(cluster_layout_store, "r1", "NEW")
    await cluster_layout_store.set(
        LAYOUT.code("OLD"), "r1", px=300_000
    )  # what the interruption left
    result = await codes.redeem("old", "a1")
    assert result.status is RedeemStatus.INVALID_CODE
    state = await read_state(cluster_layout_store)
    assert state.sessions == {} and state.sets == {}
    assert await cluster_layout_store.get(LAYOUT.runner_code("r1")) == b"NEW"
    result = await codes.redeem("new", "a1")
    assert (result.status, result.runner_id) == (RedeemStatus.PAIRED, "r1")


async def test_release_is_guarded_by_the_owner(cluster_layout_store: Redis) -> None:
    rep = replica(cluster_layout_store)
    await beat(cluster_layout_store, "r1")
    await rep.sessions.pair("a1", "r1")
    assert await rep.registry.release("r1", "someone-else") is None
    assert await rep.sessions.get_apps_by_runner_id("r1") == ["a1"]
    assert await rep.registry.release("r1", "conn-r1") == ["a1"]
    state = await read_state(cluster_layout_store)
    assert state.references() == []


async def test_sweep_forgets_stale_runners_only(cluster_layout_store: Redis) -> None:
    rep = replica(cluster_layout_store)
    await beat(cluster_layout_store, "live")
    await beat(cluster_layout_store, "dead", age_ms=60_000)
    await rep.sessions.pair("a1", "live")
    await rep.sessions.pair("a2", "dead")
    await rep.sessions.pair("a3", "dead")
    # Indexed as stale but beating again: kept, its index entry moved on.
    await cluster_layout_store.zadd(LAYOUT.last_seen("live"), {"live": 1})
    swept = await rep.registry.sweep()
    assert [(s.runner_id, s.unpaired_apps) for s in swept] == [("dead", ["a2", "a3"])]
    state = await read_state(cluster_layout_store)
    assert state.sessions == {"a1": "live"}
    assert state.indexed == {"live"} and state.owners == {"live"}
    assert await cluster_layout_store.zscore(LAYOUT.last_seen("live"), "live") > 1
    assert await rep.registry.sweep() == []


async def test_a_reader_clears_a_member_left_by_an_interrupted_pair(
    cluster_layout_store: Redis,
) -> None:
    rep = replica(cluster_layout_store)
    cluster = rep.sessions.backend.pairing
    assert cluster is not None
    assert await cluster.attach("a1", "r1", online=False) is not None  # then a crash
    assert await rep.sessions.get_apps_by_runner_id("r1") == []
    assert (await read_state(cluster_layout_store)).references() == []
    # The app can pair with r1 afterwards as if nothing had happened.
    await rep.sessions.pair("a1", "r1")
    assert await rep.sessions.get_apps_by_runner_id("r1") == ["a1"]


async def test_a_pair_interrupted_by_a_remover_retries_with_a_fresh_token(
    cluster_layout_store: Redis,
) -> None:
    """A pair whose token a remover fenced between its attach and its commit attaches again
    with a new token and commits; the remover's drop leaves the new token alone."""
    rep = replica(cluster_layout_store)
    cluster = rep.sessions.backend.pairing
    assert cluster is not None
    token = await cluster.attach("a1", "r1", online=False)
    assert token is not None
    members = await cluster.members("r1")
    await cluster.remove("r1", members, unpair=False)  # fences the token, drops a1
    result = await cluster.commit("a1", "r1", token, online=False)
    assert result.runner_id == "r1"
    state = await read_state(cluster_layout_store)
    assert state.sessions == {"a1": "r1"} and state.sets == {"r1": {"a1"}}


# -- every operation aborted between each two of its steps, on the real cluster -------------


class Aborted(Exception):
    """Raised by a step hook: the operation stops there, as a crashed replica would."""


Setup = Callable[[Redis, Replica], Awaitable[None]]
Operation = Callable[[Replica], Awaitable[object]]

RUNNERS = ["r1", "r2", "r3"]
APPS = ["a1", "a2", "a3"]


async def _paired(client: Redis, rep: Replica) -> None:
    """r1 with a1 and a2, r2 with a3, all online; codes for r2 and r3."""
    for runner in RUNNERS:
        await beat(client, runner)
    await rep.sessions.pair("a1", "r1")
    await rep.sessions.pair("a2", "r1")
    await rep.sessions.pair("a3", "r2")
    await give_code(client, "r2", "CODER2")
    await give_code(client, "r3", "CODER3")


async def _with_stray(client: Redis, rep: Replica) -> None:
    """As ``_paired``, and a9 left in r1's set by a pair that stopped after its first step."""
    await _paired(client, rep)
    assert rep.sessions.backend.pairing is not None
    await rep.sessions.backend.pairing.attach("a9", "r1", online=False)


async def _r1_stale(client: Redis, rep: Replica) -> None:
    await _paired(client, rep)
    await client.delete(LAYOUT.heartbeat("r1"))
    await client.zadd(LAYOUT.last_seen("r1"), {"r1": 1})


OPERATIONS: dict[str, tuple[Setup, Operation]] = {
    "sessions.pair (move)": (_paired, lambda r: r.sessions.pair("a1", "r2")),
    "sessions.pair (new)": (_paired, lambda r: r.sessions.pair("a9", "r3")),
    "sessions.unpair": (_paired, lambda r: r.sessions.unpair("a1")),
    "sessions.remove_all": (_paired, lambda r: r.sessions.remove_all_sessions_for_runner("r1")),
    "sessions.get_apps": (_with_stray, lambda r: r.sessions.get_apps_by_runner_id("r1")),
    "pairing.pair (move)": (_paired, lambda r: r.pairing.pair("CODER3", "a1", address="x")),
    "pairing.pair (unknown)": (_paired, lambda r: r.pairing.pair("NOPE", "a1", address="x")),
    "pairing.unpair": (_paired, lambda r: r.pairing.unpair("a3")),
    "codes.redeem": (_paired, lambda r: r.codes.redeem("CODER2", "a2")),
    "codes.consume": (_paired, lambda r: r.codes.consume("CODER2")),
    "registry.release": (_paired, lambda r: r.registry.release("r1", "conn-r1")),
    "registry.sweep": (_r1_stale, lambda r: r.registry.sweep()),
}


async def _count_steps(client: Redis, setup: Setup, operation: Operation) -> list[str]:
    seen: list[str] = []

    async def record(name: str) -> None:
        seen.append(name)

    await client.flushall(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
    await setup(client, replica(client))
    await operation(replica(client, record))
    return seen


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_an_operation_aborted_between_any_two_steps(cluster_redis: Redis, name: str) -> None:
    setup, operation = OPERATIONS[name]
    steps = await _count_steps(cluster_redis, setup, operation)
    assert steps, "the operation ran no steps"
    for k in range(1, len(steps)):  # abort before step k: steps 0..k-1 ran
        await cluster_redis.flushall(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
        await setup(cluster_redis, replica(cluster_redis))
        calls = 0

        async def abort_at(step: str, k: int = k) -> None:
            nonlocal calls
            calls += 1
            if calls > k:
                raise Aborted(step)

        with pytest.raises(Aborted):
            await operation(replica(cluster_redis, abort_at))
        where = f"{name} aborted after {steps[:k]}"
        assert await observable_problems(cluster_redis, RUNNERS, [*APPS, "a9"]) == [], where
        assert await sweep_all(cluster_redis, RUNNERS) == [], where


# -- operations of several replicas interleaved step by step, some aborted (hypothesis) -----


class Op:
    """One operation of one replica, run as a task that parks at each step hook."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.task: asyncio.Task[object] | None = None
        self.parked = asyncio.Event()
        self.go = asyncio.Event()
        self.abort = False

    async def hook(self, name: str) -> None:
        self.go.clear()
        self.parked.set()
        await self.go.wait()
        if self.abort:
            raise Aborted(name)

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def settle(self) -> None:
        """Until the operation is parked at its next step, or finished."""
        assert self.task is not None
        waiter = asyncio.ensure_future(self.parked.wait())
        await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done() and not self.task.cancelled():
            error = self.task.exception()
            if error is not None and not isinstance(error, Aborted):
                raise AssertionError(f"{self.label} failed") from error

    async def start(self, run: Callable[[Replica], Awaitable[object]], client: Redis) -> None:
        self.task = asyncio.ensure_future(run(replica(client, self.hook)))
        await self.settle()

    async def advance(self, *, abort: bool = False) -> None:
        self.abort = abort
        self.parked.clear()
        self.go.set()
        await self.settle()


KINDS = ["pair", "app_pair", "unpair", "remove_all", "release", "sweep", "get_apps"]


def _operation(kind: str, app: str, runner: str) -> Callable[[Replica], Awaitable[object]]:
    if kind == "pair":
        return lambda r: r.sessions.pair(app, runner)
    if kind == "app_pair":
        return lambda r: r.pairing.pair(f"CODE{runner}", app, address="10.0.0.1")
    if kind == "unpair":
        return lambda r: r.pairing.unpair(app)
    if kind == "remove_all":
        return lambda r: r.sessions.remove_all_sessions_for_runner(runner)
    if kind == "release":
        return lambda r: r.registry.release(runner, f"conn-{runner}")
    if kind == "sweep":
        return lambda r: r.registry.sweep()
    return lambda r: r.sessions.get_apps_by_runner_id(runner)


class Interleavings(RuleBasedStateMachine):
    """Up to four operations in flight at once, each advanced one step at a time in the
    order hypothesis picks, some aborted; runners register and go stale meanwhile. After
    every rule the store is between steps: what a client sees must agree with the session
    keys. At the end every operation finishes, and a sweep leaves no reference behind."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = self.run(self._connect())
        self.ops: list[Op] = []
        for runner in RUNNERS:
            self.run(self._register(runner))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _connect(self) -> Redis:
        client = cluster_client(self.url)
        await client.initialize()
        await client.flushall(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)
        return client  # type: ignore[return-value]

    async def _register(self, runner: str) -> None:
        """A registration as the gateway does it (claim, then a code), between any steps."""
        rep = replica(self.client)
        await rep.registry.claim(runner, f"conn-{runner}")
        await rep.codes.register(runner, f"CODE{runner}")

    def live(self) -> list[Op]:
        return [op for op in self.ops if not op.done]

    @rule(kind=st.sampled_from(KINDS), app=st.sampled_from(APPS), runner=st.sampled_from(RUNNERS))
    def start(self, kind: str, app: str, runner: str) -> None:
        if len(self.live()) >= 4:
            return
        op = Op(f"{kind}({app}, {runner})")
        self.ops.append(op)
        self.run(op.start(_operation(kind, app, runner), self.client))

    @rule(pick=st.integers(0, 3), abort=st.sampled_from([False, False, False, True]))
    def advance(self, pick: int, abort: bool) -> None:
        live = self.live()
        if live:
            self.run(live[pick % len(live)].advance(abort=abort))

    @rule(runner=st.sampled_from(RUNNERS))
    def register(self, runner: str) -> None:
        self.run(self._register(runner))

    @rule(runner=st.sampled_from(RUNNERS))
    def take_over(self, runner: str) -> None:
        """Another connection registers the runner: the old connection's release is refused."""
        self.run(self.client.set(LAYOUT.owner(runner), f"other-{runner}"))

    @rule(runner=st.sampled_from(RUNNERS))
    def go_stale(self, runner: str) -> None:
        self.run(self.client.delete(LAYOUT.heartbeat(runner)))

    @invariant()
    def clients_see_the_sessions(self) -> None:
        assert self.run(observable_problems(self.client, RUNNERS, APPS)) == []

    def teardown(self) -> None:
        try:
            for op in self.ops:
                while not op.done:
                    self.run(op.advance())
            assert self.run(observable_problems(self.client, RUNNERS, APPS)) == []
            assert self.run(sweep_all(self.client, RUNNERS)) == []
        finally:
            for op in self.ops:
                if op.task is not None and not op.done:
                    op.task.cancel()
            self.run(self.client.aclose())
            self.loop.close()


def test_interleaved_and_aborted_operations_of_several_replicas(
    redis_cluster: RedisClusterProcess,
) -> None:
    Interleavings.url = redis_cluster.url
    run_state_machine_as_test(
        Interleavings,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- every two operations: one run whole between two steps of the other --------------------


async def _contended(client: Redis, rep: Replica) -> None:
    """a1 with r2 and left over in r1's set; a2 with r1; a3 with r3, whose heartbeat is
    stale; codes for r1 and r2. Every operation below touches some of these."""
    for runner in RUNNERS:
        await beat(client, runner)
    await rep.sessions.pair("a1", "r2")
    await rep.sessions.pair("a2", "r1")
    await rep.sessions.pair("a3", "r3")
    assert rep.sessions.backend.pairing is not None
    await rep.sessions.backend.pairing.attach("a1", "r1", online=False)
    await give_code(client, "r1", "CODER1")
    await give_code(client, "r2", "CODER2")
    await client.delete(LAYOUT.heartbeat("r3"))
    await client.zadd(LAYOUT.last_seen("r3"), {"r3": 1})


CONTENDING: dict[str, Operation] = {
    "pair a1 r1": lambda r: r.sessions.pair("a1", "r1"),
    "pair a3 r1": lambda r: r.sessions.pair("a3", "r1"),
    "pair a2 r3": lambda r: r.sessions.pair("a2", "r3"),
    "app_pair a1 r1": lambda r: r.pairing.pair("CODER1", "a1", address="x"),
    "app_pair a2 r2": lambda r: r.pairing.pair("CODER2", "a2", address="x"),
    "unpair a1": lambda r: r.pairing.unpair("a1"),
    "remove_all r1": lambda r: r.sessions.remove_all_sessions_for_runner("r1"),
    "release r1": lambda r: r.registry.release("r1", "conn-r1"),
    "sweep": lambda r: r.registry.sweep(),
    "get_apps r1": lambda r: r.sessions.get_apps_by_runner_id("r1"),
}


@pytest.mark.parametrize("first", list(CONTENDING))
async def test_any_operation_run_between_two_steps_of_another(
    cluster_redis: Redis, first: str
) -> None:
    """``first`` paused after each of its steps in turn while each other operation runs
    whole (another replica), then finished: clients see the sessions, a sweep leaves
    nothing. Deterministic: every such interleaving, not a sample."""
    steps = await _count_steps(cluster_redis, _contended, CONTENDING[first])
    for second, run_second in CONTENDING.items():
        for done in range(1, len(steps)):
            await cluster_redis.flushall(target_nodes=redis.asyncio.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
            await _contended(cluster_redis, replica(cluster_redis))
            op = Op(first)
            await op.start(CONTENDING[first], cluster_redis)
            for _ in range(done):
                if not op.done:
                    await op.advance()
            await run_second(replica(cluster_redis))
            where = f"{second} after {steps[:done]} of {first}"
            assert (await read_state(cluster_redis)).broken() == [], where
            while not op.done:
                await op.advance()
                assert (await read_state(cluster_redis)).broken() == [], where
            assert await observable_problems(cluster_redis, RUNNERS, APPS) == [], where
            assert await sweep_all(cluster_redis, RUNNERS) == [], where


async def test_two_pairs_in_flight_share_their_token_against_a_remover(
    cluster_redis: Redis,
) -> None:
    """Two pairs of a1 with r1 both past their first step, then a reader clears a1 from r1's
    set (a1's session still names r2): had the second pair's token replaced the first's, the
    reader would fence only the second and the first would commit a session whose runner's
    set lacks the app. Sharing the token, both are refused once and commit afresh."""
    await beat(cluster_redis, "r1")
    await beat(cluster_redis, "r2")
    await replica(cluster_redis).sessions.pair("a1", "r2")
    first, second = Op("first pair"), Op("second pair")
    for op in (first, second):
        await op.start(lambda r: r.sessions.pair("a1", "r1"), cluster_redis)
        await op.advance()  # attached
    assert await replica(cluster_redis).sessions.get_apps_by_runner_id("r1") == []
    for op in (first, second):
        while not op.done:
            await op.advance()
        assert (await read_state(cluster_redis)).broken() == [], op.label
    assert await observable_problems(cluster_redis, RUNNERS, APPS) == []
    assert (await read_state(cluster_redis)).sessions == {"a1": "r1"}


# -- after a failover -------------------------------------------------------------------------


async def test_the_steps_run_on_after_a_master_is_killed(own_cluster: RedisClusterProcess) -> None:
    """A master killed and its replica promoted: once the client has the new slot map, every
    operation runs there (its scripts loaded again on the promoted master), data intact."""
    client: Redis = cluster_client(own_cluster.url)  # type: ignore[assignment]
    try:
        rep = replica(client)
        await _paired(client, rep)
        for svc in (rep.sessions, rep.registry, rep.codes, rep.pairing):
            await svc.load_scripts()
        await asyncio.to_thread(own_cluster.wait_replicated)
        owner = client.get_node_from_key(LAYOUT.runner_apps("r1"))  # type: ignore[attr-defined]
        victim = next(n for n in own_cluster.nodes if n.port == owner.port)
        own_cluster.kill_master(victim)
        await asyncio.to_thread(own_cluster.wait_promoted, victim)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                apps = await rep.sessions.get_apps_by_runner_id("r1")
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.ClusterDownError):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        assert apps == ["a1", "a2"]
        assert await rep.sessions.pair("a3", "r1") == "r2"
        assert (await rep.pairing.pair("CODER3", "a1", address="x")).runner_id == "r3"
        assert await rep.registry.release("r1", "conn-r1") == ["a2", "a3"]
        assert await observable_problems(client, RUNNERS, APPS) == []
        assert await sweep_all(client, RUNNERS) == []
    finally:
        await client.aclose()


# -- steps per operation: each step is one round trip (docs/round-trips.md) ----------------


async def _r3_offline(client: Redis, rep: Replica) -> None:
    await _paired(client, rep)
    await client.delete(LAYOUT.heartbeat("r3"))


async def _a1_limited(client: Redis, rep: Replica) -> None:
    await _paired(client, rep)
    for _ in range(rep.pairing.rate_limit.limit):
        await rep.pairing.rate_limit.hit(rep.pairing.rate_limit.key("pair:app", "a1"))


ROUND_TRIPS_DOC = ROOT / "docs" / "round-trips.md"

#: (row label, setup, operation): the label is the row of the cluster table.
MEASURED: list[tuple[str, Setup, Operation]] = [
    ("PairingSessionService.pair (moved)", _paired, lambda r: r.sessions.pair("a1", "r2")),
    ("PairingSessionService.pair (new)", _paired, lambda r: r.sessions.pair("a9", "r3")),
    ("PairingSessionService.unpair (paired)", _paired, lambda r: r.sessions.unpair("a1")),
    (
        "PairingSessionService.remove_all_sessions_for_runner (2 apps)",
        _paired,
        lambda r: r.sessions.remove_all_sessions_for_runner("r1"),
    ),
    (
        "PairingSessionService.get_apps_by_runner_id (2 apps)",
        _paired,
        lambda r: r.sessions.get_apps_by_runner_id("r1"),
    ),
    (
        "PairingSessionService.get_apps_by_runner_id (2 apps, 1 stray)",
        _with_stray,
        lambda r: r.sessions.get_apps_by_runner_id("r1"),
    ),
    (
        "PairingSessionService.get_session_status (paired)",
        _paired,
        lambda r: r.sessions.get_session_status("a1"),
    ),
    (
        "AppPairingService.pair (paired, moved from another runner)",
        _paired,
        lambda r: r.pairing.pair("CODER3", "a1", address="x"),
    ),
    (
        "AppPairingService.pair (unknown code)",
        _paired,
        lambda r: r.pairing.pair("NOPE", "a1", address="x"),
    ),
    (
        "AppPairingService.pair (runner offline)",
        _r3_offline,
        lambda r: r.pairing.pair("CODER3", "a1", address="x"),
    ),
    (
        "AppPairingService.pair (rate limited)",
        _a1_limited,
        lambda r: r.pairing.pair("CODER3", "a1", address="x"),
    ),
    ("AppPairingService.unpair (paired)", _paired, lambda r: r.pairing.unpair("a1")),
    ("PairingCodeService.redeem (paired)", _paired, lambda r: r.codes.redeem("CODER2", "a1")),
    ("PairingCodeService.consume (a live code)", _paired, lambda r: r.codes.consume("CODER2")),
    (
        "RunnerRegistry.release (2 apps)",
        _paired,
        lambda r: r.registry.release("r1", "conn-r1"),
    ),
    ("RunnerRegistry.sweep (1 stale runner, 2 apps)", _r1_stale, lambda r: r.registry.sweep()),
]


async def test_steps_per_operation_match_the_docs(cluster_redis: Redis) -> None:
    """Every round trip of these operations follows a step hook call, so the steps are the
    sequential round trips (a step sending one command per app sends them at once)."""
    doc = await asyncio.to_thread(ROUND_TRIPS_DOC.read_text)
    for label, setup, operation in MEASURED:
        steps = await _count_steps(cluster_redis, setup, operation)
        method, _, case = label.partition(" ")
        name = f"`{method}` {case}".rstrip()
        row = f"| {name} | {' → '.join(steps)} | {len(steps)} |"
        assert row in doc, f"docs/round-trips.md lacks the measured row {row!r}"
