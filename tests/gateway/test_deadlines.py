"""gateway.deadlines: one timer bounding many tasks, as asyncio.timeout would each."""

from __future__ import annotations

import asyncio

import pytest

from gateway.deadlines import Deadlines


async def _bounded(deadlines: Deadlines, work: asyncio.Future[None]) -> str:
    """As dispatch uses it: 'done', 'expired', or the CancelledError goes on."""
    task = asyncio.current_task()
    assert task is not None
    bucket = deadlines.enter(task)
    try:
        await work
    except BaseException as exc:
        if deadlines.leave(bucket, task) and isinstance(exc, asyncio.CancelledError):
            return "expired"
        raise
    deadlines.leave(bucket, task)
    return "done"


async def test_a_task_that_outlasts_its_deadline_is_cancelled_and_told_so() -> None:
    deadlines = Deadlines(0.05, tick=0.01)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_bounded(deadlines, never))
    assert await task == "expired"
    assert task.cancelling() == 0  # the deadline's cancellation was taken back
    assert not deadlines._expired and not deadlines._buckets and deadlines._timer is None


async def test_a_task_that_left_in_time_is_never_cancelled_later() -> None:
    deadlines = Deadlines(0.05, tick=0.01)
    loop = asyncio.get_running_loop()

    async def two_events() -> tuple[str, str]:
        quick: asyncio.Future[None] = loop.create_future()
        loop.call_soon(quick.set_result, None)
        first = await _bounded(deadlines, quick)
        # the first event's bucket comes due while this task waits, unbounded, for more
        # (a wait longer than a deadline plus a tick)
        await asyncio.sleep(0.2)
        later: asyncio.Future[None] = loop.create_future()
        loop.call_soon(later.set_result, None)
        return first, await _bounded(deadlines, later)

    assert await asyncio.create_task(two_events()) == ("done", "done")


async def test_many_tasks_share_buckets_and_each_gets_its_own_outcome() -> None:
    deadlines = Deadlines(0.05, tick=0.01)
    loop = asyncio.get_running_loop()
    never = [loop.create_future() for _ in range(20)]
    quick = [loop.create_future() for _ in range(20)]
    tasks = [asyncio.create_task(_bounded(deadlines, f)) for f in never + quick]
    await asyncio.sleep(0)
    for f in quick:
        f.set_result(None)
    results = await asyncio.gather(*tasks)
    assert results == ["expired"] * 20 + ["done"] * 20
    assert len(deadlines._buckets) <= 1 + int(0.05 / 0.01)


async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(10.0)
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_bounded(deadlines, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_error_leaves_the_deadline_so_it_never_fires_on_the_task() -> None:
    deadlines = Deadlines(0.05, tick=0.01)
    loop = asyncio.get_running_loop()

    async def failing_then_waiting() -> str:
        broken: asyncio.Future[None] = loop.create_future()
        broken.set_exception(OSError("store down"))
        with pytest.raises(OSError):
            await _bounded(deadlines, broken)
        await asyncio.sleep(0.2)  # past the first event's deadline: not cancelled
        return "still running"

    assert await asyncio.create_task(failing_then_waiting()) == "still running"
