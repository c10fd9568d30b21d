"""examples/runner.py and examples/app.py, as a user runs them, against a gateway process."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from tests.support.examples import RunnerProcess, run_app
from tests.support.gateways import Client, GatewayProcess


async def test_app_prints_runner_output_and_runner_survives_a_gateway_restart(
    gateway: GatewayProcess,
) -> None:
    runner_id = f"example-{secrets.token_hex(4)}"
    runner = RunnerProcess(gateway.url, runner_id)
    await runner.start()
    try:
        code, line = await runner.next_code()
        app_id = f"example-app-{secrets.token_hex(8)}"
        status, out = await run_app(
            gateway.url, "--app-session-id", app_id, "--code", code, "hello world", "second line"
        )
        assert status == 0, out
        assert f"paired with runner {runner_id}" in out
        printed = out.splitlines()
        assert printed[-2:] == ["echo: hello world", "echo: second line"], out

        # The gateway dies (SIGKILL: no graceful close) and comes back on the same port.
        port = gateway.port
        gateway.kill()
        gateway.start()
        assert gateway.port == port
        new_code, _ = await runner.next_code(after=line + 1, timeout=20)
        assert new_code != code
        assert any(rl.startswith("disconnected; reconnecting") for rl in runner.lines)

        # The first app resumes with its appSessionId, no code: still paired, and served.
        status, out = await run_app(gateway.url, "--app-session-id", app_id, "resumed")
        assert status == 0, out
        assert out.splitlines() == ["echo: resumed"], out
        # A new app pairs with the new code.
        status, out = await run_app(gateway.url, "--code", new_code, "after restart")
        assert status == 0, out
        assert out.splitlines()[-1] == "echo: after restart", out
        # The spent code no longer pairs.
        status, out = await run_app(gateway.url, "--code", code, "stale")
        assert status == 1 and "INVALID_CODE" in out, out
    finally:
        assert await runner.stop() == 0, "\n".join(runner.lines)
    assert runner.lines[-1] == "stopped"


async def test_runner_exec_mode_runs_the_command(gateway: GatewayProcess) -> None:
    """With --exec the runner runs each input in a shell and sends back its output."""
    runner = RunnerProcess(gateway.url, f"example-exec-{secrets.token_hex(4)}", "--exec")
    await runner.start()
    try:
        code, _ = await runner.next_code()
        status, out = await run_app(gateway.url, "--code", code, "echo sum=$((6 * 7))")
        assert status == 0, out
        assert out.splitlines()[-1] == "sum=42", out
    finally:
        assert await runner.stop() == 0, "\n".join(runner.lines)


async def test_runner_makes_its_key_once_and_reuses_it(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """The first start writes a 0600 key file and binds the runnerId; a keyless client is
    refused the id; a restart of the runner reads the same key and registers again."""
    runner_id = f"example-key-{secrets.token_hex(4)}"
    key_file = tmp_path / "state" / "runner.key"
    first = RunnerProcess(gateway.url, runner_id, "--key-file", str(key_file))
    await first.start()
    try:
        await first.next_code()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 22
        thief = Client(reconnection=False)
        await thief.connect(gateway.url)
        try:
            ack = await thief.call("runner:register", {"runnerId": runner_id})
            assert ack["error"] == "UNAUTHORIZED", ack
        finally:
            await thief.close()
    finally:
        assert await first.stop() == 0
    second = RunnerProcess(gateway.url, runner_id, "--key-file", str(key_file))
    await second.start()
    try:
        await second.next_code()  # registered: the bound id accepted the key it kept
        assert key_file.read_text().strip() == key
        assert not any("made a new runner key" in line for line in second.lines)
    finally:
        await second.stop()
