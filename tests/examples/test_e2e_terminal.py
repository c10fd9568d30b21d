"""The runner with --pty and the app in tmux, end to end encrypted, watched from outside.

A recording proxy sits between each client and a gateway process on a real redis-server
whose MONITOR is recorded: what the shell prints, what is typed and the code's secret must
appear in none of the proxy's bytes (WebSocket payloads unmasked), the MONITOR stream or the
gateway's log. The same session with --plain shows the recorders do see plaintext when it is
there. A byte flipped on the way to the app is never shown; a wrong secret ends the app
without a shell and the runner shows a new code.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.examples import APP, RunnerProcess
from tests.support.gateways import GatewayProcess
from tests.support.recording_proxy import RecordingProxy
from tests.support.redis_server import RedisProcess
from tests.support.terminal import Tmux

SHELL = "env 'PS1=$ ' HISTFILE=/dev/null bash --norc --noprofile"
LOCAL_SHELL = "env 'PS1=local$ ' sh"


class Monitor:
    """Every command the Redis server runs, as MONITOR prints it."""

    def __init__(self, url: str) -> None:
        # No read timeout: MONITOR may be quiet for longer than redis-py's default 5 s.
        self.client = aioredis.from_url(url, socket_timeout=None)
        self.lines: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def _run(self) -> None:
        async with self.client.monitor() as monitor:
            self.started.set()
            async for command in monitor.listen():
                self.lines.append(str(command.get("command", "")))

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.started.wait(), 10)

    def state(self) -> str:
        task = self.task
        if task is None or not task.done():
            return f"running, {len(self.lines)} lines"
        return f"ended: {task.exception() if not task.cancelled() else 'cancelled'}"

    async def stop(self) -> str:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        await self.client.aclose()
        return "\n".join(self.lines)


@pytest.fixture
async def stack(own_redis: RedisProcess) -> AsyncIterator[tuple[GatewayProcess, Monitor]]:
    monitor = Monitor(own_redis.url)
    await monitor.start()
    # Production-like liveness: on a loaded machine a 1 s ping cycle can drop a client, and a
    # runner that registers again invalidates the code the test read.
    gw = GatewayProcess(
        own_redis.url,
        {
            "heartbeat": {"timeout_s": 10, "ttl_s": 20},
            "socketio": {"ping_interval_s": 5, "ping_timeout_s": 10},
            "pairing_code": {"ttl_s": 300},
        },
    )
    gw.start()
    yield gw, monitor
    gw.terminate()
    await monitor.stop()


@pytest.fixture
async def tmux() -> AsyncIterator[Tmux]:
    term = Tmux(cols=100, rows=30)
    await term.start(LOCAL_SHELL)
    yield term
    await term.kill()


def pty_runner(url: str, *extra: str) -> RunnerProcess:
    return RunnerProcess(url, f"e2e-{secrets.token_hex(4)}", "--pty", "--shell", SHELL, *extra)


def app_command(url: str, code: str, state_dir: Path, *extra: str) -> str:
    argv = [sys.executable, str(APP), "--url", url, "--state-dir", str(state_dir), *extra]
    return f"{shlex.join([*argv, '--code', code])}; echo APP-EXIT=$?"


@pytest.mark.parametrize("mode", ["e2e", "plain"])
async def test_the_relay_sees_no_plaintext(
    mode: str, stack: tuple[GatewayProcess, Monitor], tmux: Tmux, tmp_path: Path
) -> None:
    gw, monitor = stack
    app_proxy = await RecordingProxy(gw.port).start()
    runner_proxy = await RecordingProxy(gw.port).start()
    extra = ("--plain",) if mode == "plain" else ()
    runner = pty_runner(runner_proxy.url, *extra)
    await runner.start()
    try:
        code, _ = await runner.next_code()
        await tmux.wait_for(r"^local\$")
        await tmux.type(app_command(app_proxy.url, code, tmp_path, *extra))
        label = "end-to-end encrypted" if mode == "e2e" else "not encrypted"
        try:
            await tmux.wait_for(rf"^paired with runner \S+ as app \S+ \({label}\)$")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nrunner: {runner.lines}") from None
        await tmux.wait_for(r"^\$ $")
        token = f"tok{secrets.token_hex(6)}"
        await tmux.type(f"printf 'E2E-%s-MARK\\n' $((123456*7)); : {token}")
        await tmux.wait_for(r"^E2E-864192-MARK$")
        await tmux.type("exit")
        await tmux.wait_for(r"^APP-EXIT=0$")
    finally:
        assert await runner.stop() == 0, "\n".join(runner.lines)
        await app_proxy.close()
        await runner_proxy.close()
    gw.terminate()
    log = gw.log()
    state = monitor.state()
    redis_seen = await monitor.stop()
    assert redis_seen, f"MONITOR recorded nothing: {state}"
    secret = code.rsplit("-", 1)[1] if mode == "e2e" else None
    nameplate = code.rsplit("-", 1)[0] if mode == "e2e" else code
    # The recorders see what passes: the nameplate goes to the gateway and into Redis.
    assert app_proxy.seen(nameplate.encode()) and nameplate in redis_seen
    for needle in (b"864192-MARK", token.encode()):
        places = {
            "app proxy": app_proxy.seen(needle),
            "runner proxy": runner_proxy.seen(needle),
            "redis MONITOR": needle.decode() in redis_seen,
            "gateway log": needle.decode() in log,
        }
        if mode == "e2e":
            assert not any(places.values()), (needle, places)
        else:  # plaintext relayed: the recorders catch it where it passes
            assert places["app proxy"] and places["runner proxy"] and places["redis MONITOR"]
    if secret is not None:
        assert not app_proxy.seen(secret.encode())
        assert not runner_proxy.seen(secret.encode())
        assert secret not in redis_seen and secret not in log


async def test_a_flipped_byte_is_never_shown(
    stack: tuple[GatewayProcess, Monitor], tmux: Tmux, tmp_path: Path
) -> None:
    gw, _ = stack
    proxy = await RecordingProxy(gw.port).start()
    runner = pty_runner(gw.url)
    await runner.start()
    try:
        code, _ = await runner.next_code()
        await tmux.wait_for(r"^local\$")
        await tmux.type(app_command(proxy.url, code, tmp_path))
        await tmux.wait_for(r"^\$ $")
        await tmux.type("echo ok-$((6*7))")
        await tmux.wait_for(r"^ok-42$")
        flipped = proxy.tamper_next(lambda payload: payload[:3] == b"\xe2\x01\x10")
        await tmux.type("printf 'TAMPER-%s\\n' $((5*5))")
        await asyncio.wait_for(flipped.wait(), 20)
        await tmux.wait_for(r"failed authentication", timeout=20)
        await tmux.wait_for(r"^APP-EXIT=4$")
        screen = await tmux.screen(history=True)
        assert "TAMPER-25" not in screen, screen
    finally:
        assert await runner.stop() == 0, "\n".join(runner.lines)
        await proxy.close()


async def test_a_wrong_secret_ends_the_app_without_a_shell(
    stack: tuple[GatewayProcess, Monitor], tmux: Tmux, tmp_path: Path
) -> None:
    gw, _ = stack
    runner = pty_runner(gw.url)
    await runner.start()
    try:
        code, line = await runner.next_code()
        nameplate, secret = code.rsplit("-", 1)
        wrong = secret[:-1] + ("2" if secret[-1] != "2" else "3")
        await tmux.wait_for(r"^local\$")
        await tmux.type(app_command(gw.url, f"{nameplate}-{wrong}", tmp_path))
        await tmux.wait_for(r"code was wrong")
        await tmux.wait_for(r"^APP-EXIT=2$")
        new_code, _ = await runner.next_code(after=line + 1)
        assert new_code.rsplit("-", 1)[0] != nameplate
        assert not any("shell" in rl and "started" in rl for rl in runner.lines), runner.lines
        assert any("wrong code" in rl for rl in runner.lines)
        # The right secret of the spent code does not pair any more; the new code does.
        await tmux.type(app_command(gw.url, code, tmp_path))
        await tmux.wait_for(r"INVALID_CODE")
        await tmux.type(app_command(gw.url, new_code, tmp_path))
        await tmux.wait_for(r"^\$ $")
        await tmux.type("exit")
        await tmux.wait_for(r"^APP-EXIT=0$")
    finally:
        assert await runner.stop() == 0, "\n".join(runner.lines)
