"""The client library's runner and app against a gateway process (embedded store)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pairing_client.app import INTEGRITY, REFUSED, WRONG_CODE, App, AppConfig
from pairing_client.runner import Runner, RunnerConfig
from tests.support.gateways import GatewayProcess


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayProcess]:
    gw = GatewayProcess(f"memory://clients-{secrets.token_hex(4)}")
    gw.start()
    yield gw
    gw.terminate()


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.changed.set()

    async def wait(self, text: str, after: int = 0, timeout: float = 20) -> int:
        async def found() -> int:
            while True:
                for i in range(after, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(found(), timeout)


@contextlib.asynccontextmanager
async def running_runner(gw: GatewayProcess, **kw: Any) -> AsyncIterator[tuple[Runner, Lines]]:
    lines = Lines()
    runner = Runner(
        RunnerConfig(
            url=gw.url,
            runner_id=f"lib-{secrets.token_hex(4)}",
            min_backoff=0.2,
            max_backoff=0.5,
            **kw,
        ),
        on_line=lines,
    )
    task = asyncio.create_task(runner.run())
    try:
        await lines.wait("pairing code: ")
        yield runner, lines
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def echo_roundtrip(app: App, outputs: asyncio.Queue[Any], text: str) -> Any:
    app.send(text)
    return await asyncio.wait_for(outputs.get(), 20)


async def test_e2e_pair_and_echo_then_a_restarted_app_rekeys(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    async with running_runner(gateway) as (runner, lines):
        assert runner.code is not None and runner.code.count("-") == 1
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        app_id = f"lib-app-{secrets.token_hex(8)}"
        cfg = AppConfig(gateway.url, app_session_id=app_id, code=runner.code, state_dir=tmp_path)
        app = App(cfg, on_data=outputs.put_nowait)
        task = asyncio.create_task(app.run())
        await asyncio.wait_for(app.ready.wait(), 20)
        assert await echo_roundtrip(app, outputs, "hello") == b"echo: hello"
        await lines.wait("end-to-end encrypted session")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert (tmp_path / f"{app_id}.json").stat().st_mode & 0o777 == 0o600

        # A new process of the app: no code, the stored pairing key re-keys.
        outputs = asyncio.Queue()
        again = App(
            AppConfig(gateway.url, app_session_id=app_id, state_dir=tmp_path),
            on_data=outputs.put_nowait,
        )
        task = asyncio.create_task(again.run())
        await asyncio.wait_for(again.ready.wait(), 20)
        assert again.channel is not None and again.channel.handshake is not None
        assert again.channel.handshake.rekey
        assert await echo_roundtrip(again, outputs, "after restart") == b"echo: after restart"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wrong_secret_ends_the_app_and_the_runner_shows_a_new_code(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    async with running_runner(gateway) as (runner, lines):
        assert runner.code is not None
        nameplate, secret = runner.code.rsplit("-", 1)
        wrong = secret[:-1] + ("2" if secret[-1] != "2" else "3")
        app_id = f"lib-app-{secrets.token_hex(8)}"
        app = App(
            AppConfig(
                gateway.url, app_session_id=app_id, code=f"{nameplate}-{wrong}", state_dir=tmp_path
            )
        )
        status, message = await asyncio.wait_for(app.run(), 30)
        assert status == WRONG_CODE and "code was wrong" in message
        at = await lines.wait("wrong code")
        await lines.wait("pairing code: ", after=at)
        assert runner.code.split("-")[0] != nameplate
        # The new code works, also for the app that guessed wrong (the user types it again).
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        good = App(
            AppConfig(gateway.url, app_session_id=app_id, code=runner.code, state_dir=tmp_path),
            on_data=outputs.put_nowait,
        )
        task = asyncio.create_task(good.run())
        await asyncio.wait_for(good.ready.wait(), 20)
        assert await echo_roundtrip(good, outputs, "x") == b"echo: x"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_plain_runner_and_app_keep_the_old_protocol(gateway: GatewayProcess) -> None:
    async with running_runner(gateway, e2e=False) as (runner, _):
        assert runner.code is not None and "-" not in runner.code
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        app = App(AppConfig(gateway.url, code=runner.code), on_data=outputs.put_nowait)
        assert not app.e2e
        task = asyncio.create_task(app.run())
        await asyncio.wait_for(app.ready.wait(), 20)
        assert await echo_roundtrip(app, outputs, "plain") == "echo: plain"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_unknown_code_is_refused(gateway: GatewayProcess, tmp_path: Path) -> None:
    app = App(AppConfig(gateway.url, code="ZZZZZZZZZZ-ABCDEFG", state_dir=tmp_path))
    status, message = await asyncio.wait_for(app.run(), 30)
    assert status == REFUSED and "INVALID_CODE" in message
    assert INTEGRITY != REFUSED


async def test_an_encrypting_runner_never_acts_on_plaintext(gateway: GatewayProcess) -> None:
    """Whoever pairs with the nameplate alone (the gateway knows it) cannot type anything."""
    async with running_runner(gateway) as (runner, lines):
        assert runner.code is not None
        nameplate = runner.code.rsplit("-", 1)[0]
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        intruder = App(
            AppConfig(gateway.url, code=nameplate, plain=True), on_data=outputs.put_nowait
        )
        task = asyncio.create_task(intruder.run())
        await asyncio.wait_for(intruder.ready.wait(), 20)
        intruder.send("echo pwned")
        await lines.wait("sent unencrypted data, ignored")
        assert outputs.empty()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_clients_work_with_connection_state_recovery_on(tmp_path: Path) -> None:
    """With recovery on every event carries its offset as one more argument: the clients'
    handlers take the message alone (a handler of one argument would never be called)."""
    gw = GatewayProcess(
        f"memory://clients-{secrets.token_hex(4)}",
        {"socketio": {"connection_state_recovery": True}},
    )
    gw.start()
    try:
        async with running_runner(gw) as (runner, _):
            assert runner.code is not None
            outputs: asyncio.Queue[Any] = asyncio.Queue()
            app = App(
                AppConfig(
                    gw.url,
                    app_session_id=f"lib-app-{secrets.token_hex(8)}",
                    code=runner.code,
                    state_dir=tmp_path,
                ),
                on_data=outputs.put_nowait,
            )
            task = asyncio.create_task(app.run())
            try:
                await asyncio.wait_for(app.ready.wait(), 20)
                assert await echo_roundtrip(app, outputs, "offsets") == b"echo: offsets"
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        gw.terminate()
