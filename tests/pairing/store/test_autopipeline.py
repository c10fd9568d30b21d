"""pairing.store.autopipeline: redis-py's API and failure semantics, one pipelined connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pairing import connect
from pairing.store import Redis
from pairing.store.autopipeline import AutoPipelineRedis, Durability, NotReplicated
from tests.support.redis_server import RedisProcess


async def _connections(client: Redis) -> int:
    return len(await client.client_list())


async def test_concurrent_calls_share_one_connection_in_order(redis: Redis) -> None:
    assert isinstance(redis, AutoPipelineRedis)
    await redis.ping()
    before = await _connections(redis)
    results = await asyncio.gather(*(redis.set(f"k{i}", i) for i in range(500)))
    assert results == [True] * 500  # SET's callback ran: True, not b"OK"
    values = await asyncio.gather(*(redis.get(f"k{i}") for i in range(500)))
    assert values == [str(i).encode() for i in range(500)]  # each caller got its own reply
    assert await _connections(redis) == before  # no pooled connection was opened for them
    link = redis._link
    assert link is not None and not link._flushes  # answered flushes are not kept


async def test_replies_keep_redis_py_types_and_errors(redis: Redis) -> None:
    await redis.sadd("s", "a", "b")
    assert await redis.smembers("s") == {b"a", b"b"}
    assert await redis.mget(["s-none", "s-none2"]) == [None, None]
    assert await redis.exists("s") == 1
    entry = await redis.xadd("x", {"f": "v"})
    assert await redis.xrevrange("x") == [(entry, {b"f": b"v"})]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await redis.get("s")
    with pytest.raises(NoScriptError):
        await redis.evalsha("0" * 40, 0)
    # an error reply fails only its own caller
    ok, bad = await asyncio.gather(redis.exists("s"), redis.get("s"), return_exceptions=True)
    assert ok == 1 and isinstance(bad, ResponseError)


async def test_scripts_reload_after_a_flush(redis: Redis) -> None:
    script = redis.register_script("return ARGV[1]")
    assert await script(args=["one"]) == b"one"
    await redis.script_flush()
    assert await script(args=["two"]) == b"two"  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA


async def test_decoded_replies(redis_url: str) -> None:
    client = AutoPipelineRedis.from_url(redis_url, decode_responses=True, protocol=2)
    try:
        await client.set("d", "é")
        assert await client.get("d") == "é"
    finally:
        await client.delete("d")
        await client.aclose()


async def test_a_restart_fails_waiting_calls_and_the_next_call_reconnects(
    own_redis: RedisProcess,
) -> None:
    client = connect(own_redis.url)
    try:
        await client.set("k", "v")
        own_redis.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("k")  # the server is gone: a prompt error, not a hang
        own_redis.start()
        assert await client.get("k") is None  # a new connection (the data died with it)
        await client.set("k", "again")
        assert await client.get("k") == b"again"
    finally:
        await client.aclose()


async def test_a_frozen_server_times_out_once_and_the_link_recovers(
    own_redis: RedisProcess,
) -> None:
    client = connect(own_redis.url, socket_timeout=0.3)
    try:
        await client.set("k", "v")
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(
                *(client.get("k") for _ in range(20)), return_exceptions=True
            )
            waited = loop.time() - started
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert waited < 2.0  # bounded by the socket timeout, not by the freeze
        assert await client.get("k") == b"v"  # a new connection works
    finally:
        await client.aclose()


async def test_a_loop_too_busy_to_read_for_a_timeout_does_not_fail_answered_calls(
    own_redis: RedisProcess,
) -> None:
    """The event loop blocked longer than the socket timeout (CPU starvation, a burst of
    work) while the reply sat in the socket: the call gets its reply, not TimeoutError (the
    watchdog's timer would otherwise run before the reader in the loop's next turn)."""
    client = connect(own_redis.url, socket_timeout=0.3)
    try:
        await client.set("k", "v")
        call = asyncio.ensure_future(client.get("k"))
        await asyncio.sleep(0)  # the call runs and schedules its flush ...
        # ... and right after the flush, in the same turn, the loop is blocked for twice the
        # timeout; the reply arrives meanwhile.
        asyncio.get_running_loop().call_soon(time.sleep, 0.6)
        assert await call == b"v"
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_does_not_shift_the_replies(redis: Redis) -> None:
    await redis.set("a", "1")
    await redis.set("b", "2")
    slow = asyncio.ensure_future(redis.eval("return redis.call('GET', 'a')", 0))
    gave_up = asyncio.ensure_future(redis.get("a"))
    after = asyncio.ensure_future(redis.get("b"))
    await asyncio.sleep(0)
    gave_up.cancel()
    assert await slow == b"1"
    assert await after == b"2"  # not "1": the abandoned reply was dropped, in order


async def test_close_fails_waiting_calls(redis_url: str) -> None:
    client = connect(redis_url)
    await client.ping()
    pending = asyncio.ensure_future(client.get("k"))
    await asyncio.sleep(0)  # written to the link, not yet flushed
    await client.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await pending


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        ("EVALSHA", "a" * 40, 2, "k1", "k2", "é", b"\x00\xff", 12345678901234, -3, 1.5),
        ("SET", "k", ""),
    ],
)
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_packer_writes_what_redis_py_writes(args: tuple[object, ...], encoding: str) -> None:
    from redis.asyncio.connection import Connection

    from pairing.store.autopipeline import packer

    conn = Connection(encoding=encoding)
    assert packer(conn.encoder)(args) == b"".join(conn.pack_command(*args))


def test_the_packer_refuses_what_redis_py_refuses() -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    from pairing.store.autopipeline import packer

    with pytest.raises(DataError):
        packer(Connection().encoder)(("SET", "k", True))


async def test_a_demoted_server_makes_the_link_reconnect(own_redis: RedisProcess) -> None:
    """A failover turns the old primary read-only: the link drops its connection (so a
    Sentinel client asks for the new primary) instead of failing writes forever."""
    client = connect(own_redis.url)
    admin = connect(own_redis.url)
    try:
        await client.set("k", "v")
        await admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # nobody there: stays RO
        results = await asyncio.gather(
            *(client.set(f"k{i}", i) for i in range(5)), return_exceptions=True
        )
        assert results and all(isinstance(r, ResponseError) for r in results), results
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        assert await client.set("k", "again") is True
        assert await client.get("k") == b"again"
    finally:
        await client.aclose()
        await admin.aclose()


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["SET", "GET", "DEL", "EXISTS", "MGET"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 9),
        st.booleans(),  # the caller gives up right after sending
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_OPS)
async def test_any_interleaving_answers_each_caller_as_if_run_one_by_one(
    redis: Redis, ops: list[tuple[str, str, int, bool]]
) -> None:
    """Concurrent callers, some giving up: every remaining caller gets exactly the reply it
    would get if the commands had run one at a time in call order (given-up commands still
    run: they were written)."""
    await redis.delete("a", "b", "c")
    model: dict[str, bytes] = {}
    expected: list[object] = []
    calls = []
    for op, key, value, _ in ops:
        if op == "SET":
            model[key] = str(value).encode()
            expected.append(True)
            calls.append(redis.set(key, value))
        elif op == "GET":
            expected.append(model.get(key))
            calls.append(redis.get(key))
        elif op == "DEL":
            expected.append(1 if model.pop(key, None) is not None else 0)
            calls.append(redis.delete(key))
        elif op == "EXISTS":
            expected.append(1 if key in model else 0)
            calls.append(redis.exists(key))
        else:
            expected.append([model.get(key), model.get("c")])
            calls.append(redis.mget([key, "c"]))
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0)  # every call is written to the link
    for task, (_, _, _, give_up) in zip(tasks, ops, strict=True):
        if give_up:
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result, want, (_, _, _, give_up) in zip(results, expected, ops, strict=True):
        if not give_up:
            assert result == want
    assert await redis.mget(["a", "b", "c"]) == [model.get(k) for k in "abc"]


async def _disconnected_link(client: Redis) -> Any:
    """The client's link, after it connected once and then lost its connection."""
    assert isinstance(client, AutoPipelineRedis)
    await client.ping()
    link = client._link
    assert link is not None
    link._teardown(RedisConnectionError("dropped for the test"))
    return link


async def test_a_caller_that_joined_a_failed_connect_tries_once_on_its_own(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after an outage, a call must not inherit the failure of a connection attempt
    that began while the server was still down."""
    client = connect(redis_url)
    try:
        link = await _disconnected_link(client)
        real_open = link._open
        attempts = 0

        async def open_failing_first() -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                await asyncio.sleep(0.05)
                raise RedisTimeoutError("the server was still frozen")
            await real_open()

        monkeypatch.setattr(link, "_open", open_failing_first)
        first = asyncio.ensure_future(client.get("k"))
        await asyncio.sleep(0)  # its attempt is under way
        late = asyncio.ensure_future(client.get("k"))  # joins the doomed attempt
        with pytest.raises(RedisTimeoutError):
            await first  # its own attempt failed: no second try
        assert await late is None  # it tried again, on its own, and got through
        assert attempts == 2
    finally:
        await client.aclose()


@pytest.mark.timeout(10)
async def test_a_finished_failed_attempt_not_yet_cleared_is_not_waited_on_again(
    redis_url: str,
) -> None:
    """Regression: a caller finding the failed attempt still recorded (its done callback
    not run yet) awaited it again and again without yielding: the whole process hung."""
    client = connect(redis_url)
    try:
        link = await _disconnected_link(client)

        async def failed() -> None:
            raise RedisTimeoutError("an attempt made during an outage")

        stale = asyncio.ensure_future(failed())
        await asyncio.gather(stale, return_exceptions=True)
        link._connecting = stale  # finished, failed, and not cleared
        assert await client.get("k") is None
    finally:
        await client.aclose()


async def test_wait_replicas_on_one_redis_refuses_writes_no_replica_confirmed(
    redis_url: str,
) -> None:
    """``redis.wait_replicas`` on one Redis (no replica here): a write runs, but its caller
    is told NotReplicated (an UNAVAILABLE ack) after the wait; reads do not wait."""
    client = connect(redis_url, durability=Durability(replicas=1, timeout_ms=50))
    try:
        with pytest.raises(NotReplicated):
            await client.set("durable", "v")
        assert await client.get("durable") == b"v"  # it did run (and is not sent again)
        # Writes of one loop turn share one WAIT; each is told.
        results = await asyncio.gather(
            client.set("durable-a", "1"), client.set("durable-b", "2"), return_exceptions=True
        )
        assert all(isinstance(r, NotReplicated) for r in results), results
        assert await client.mget("durable-a", "durable-b") == [b"1", b"2"]
    finally:
        with contextlib.suppress(NotReplicated):  # (deleted, and told so)
            await client.delete("durable", "durable-a", "durable-b")
        await client.aclose()
