"""Two-way E2E traffic across a replica killed with SIGKILL, and across a frozen network:
every command reaches the runner once, in order, and every answer reaches the app once, in
order. The gateway's hold replays what it took; the clients resend what it never acked; the
record counter drops what comes twice."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pairing_client.app import App, AppConfig
from pairing_client.runner import Runner, RunnerConfig
from tests.support.gateways import GatewayProcess
from tests.support.recording_proxy import RecordingProxy
from tests.support.redis_server import RedisProcess

COMMANDS = 300
CONFIG = {"heartbeat": {"timeout_s": 10, "ttl_s": 20}}


class RecordingRunner(Runner):
    """Keeps every input the runner answered, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered: list[str] = []

    async def answer(self, command: str) -> str:
        self.answered.append(command)
        return await super().answer(command)


@pytest.fixture
async def replicas(own_redis: RedisProcess) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    a = GatewayProcess(own_redis.url, CONFIG)
    b = GatewayProcess(own_redis.url, CONFIG)
    a.start()
    b.start()
    yield a, b
    a.terminate()
    b.terminate()


@pytest.mark.parametrize("fault", ["sigkill", "freeze"])
async def test_nothing_lost_or_repeated(
    fault: str, replicas: tuple[GatewayProcess, GatewayProcess], tmp_path: Path
) -> None:
    a, b = replicas
    # The app's network and the runner's: a frozen runner link would be a runner whose
    # disconnect the gateway sees (by design it unpairs); a phone's network is what freezes.
    proxy = await RecordingProxy(a.port).start()
    runner_proxy = await RecordingProxy(a.port).start()
    lines: list[str] = []
    runner = RecordingRunner(
        RunnerConfig(
            url=runner_proxy.url,
            runner_id=f"resume-{secrets.token_hex(4)}",
            min_backoff=0.1,
            max_backoff=0.3,
            ack_timeout=3,
        ),
        on_line=lines.append,
    )
    runner_task = asyncio.create_task(runner.run())
    outputs: list[str] = []
    all_out = asyncio.Event()
    quarter = asyncio.Event()

    def got(data: Any) -> None:
        outputs.append(data.decode() if isinstance(data, bytes) else repr(data))
        if len(outputs) >= COMMANDS // 4:
            quarter.set()
        if len(outputs) >= COMMANDS:
            all_out.set()

    app: App | None = None
    app_task: asyncio.Task[Any] | None = None
    try:
        await asyncio.wait_for(runner.code_changed.wait(), 30)
        app = App(
            AppConfig(
                proxy.url,
                code=runner.code,
                state_dir=tmp_path,
                ack_timeout=3,
                min_backoff=0.1,
                max_backoff=0.3,
            ),
            on_data=got,
            on_notice=lines.append,
        )
        app.log = lambda line: lines.append(f"app: {line}")
        app_task = asyncio.create_task(app.run())
        await asyncio.wait_for(app.ready.wait(), 30)
        for i in range(1, COMMANDS + 1):
            app.send(f"c-{i}")
            if i == COMMANDS // 3:
                await asyncio.wait_for(quarter.wait(), 30)  # answers are flowing back too
                if fault == "sigkill":
                    # Where the load balancer sends them next.
                    proxy.upstream_port = runner_proxy.upstream_port = b.port
                    a.kill()
                else:
                    proxy.freeze()  # connections open now hang; new ones pass
            await asyncio.sleep(0.005)
        waiter = asyncio.create_task(all_out.wait())
        await asyncio.wait([waiter, app_task], timeout=90, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert all_out.is_set(), (
            f"{len(outputs)} answers of {COMMANDS}; app ended: "
            f"{app_task.result() if app_task.done() else None}; {lines}"
        )
        await asyncio.sleep(0.5)  # anything repeated would come now
        assert runner.answered == [f"c-{i}" for i in range(1, COMMANDS + 1)], lines
        assert outputs == [f"echo: c-{i}" for i in range(1, COMMANDS + 1)], lines
        assert app.reconnects >= 1
        print(
            f"{fault}: resent by the app {app.outbox.resent}, by the runner "
            f"{runner.outbox.resent}; app reconnects {app.reconnects}"
        )
    finally:
        for task in (app_task, runner_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await proxy.close()
        await runner_proxy.close()
