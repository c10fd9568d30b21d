"""examples/runner.py --pty and examples/app.py as a terminal, used as a person would.

The app runs in a tmux pane (its local terminal: keys in with send-keys, the screen read with
capture-pane), the runner gives it a real bash in a pseudo-terminal, and both talk to a real
gateway process with a real Redis. Every wait polls the screen for what a person would wait
to see; markers are computed by the remote shell (``$((6*7))`` shows as 42), so the typed
command line never matches what its output is waited for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.examples import APP, RunnerProcess
from tests.support.freeze_proxy import FreezingProxy
from tests.support.gateways import GatewayProcess
from tests.support.terminal import Tmux

#: The remote shell: no rc files, a fixed prompt, no history file.
SHELL = "env 'PS1=$ ' HISTFILE=/dev/null bash --norc --noprofile"
#: The local shell in the tmux pane, from which a person starts the app: a plain sh, with
#: no line editor of its own changing the terminal's modes while it prompts.
LOCAL_SHELL = "env 'PS1=local$ ' sh"


@pytest.fixture
async def runner(gateway: GatewayProcess) -> AsyncIterator[RunnerProcess]:
    proc = RunnerProcess(
        gateway.url,
        f"pty-{secrets.token_hex(4)}",
        "--pty",
        "--shell",
        SHELL,
        "--term",
        "xterm-256color",
    )
    await proc.start()
    yield proc
    assert await proc.stop() == 0, "\n".join(proc.lines)


@pytest.fixture
async def tmux() -> AsyncIterator[Tmux]:
    term = Tmux(cols=100, rows=30)
    await term.start(LOCAL_SHELL)
    yield term
    await term.kill()


def app_command(url: str, code: str | None, tail: str = "", *extra: str) -> str:
    """The command line a person types to start the terminal (then prints its status)."""
    argv = [sys.executable, str(APP), "--url", url, *extra]
    if code is not None:
        argv += ["--code", code]
    return f"{shlex.join(argv)}{tail}; echo APP-EXIT=$?"


async def start_terminal(tmux: Tmux, gateway: GatewayProcess, runner: RunnerProcess) -> None:
    code, _ = await runner.next_code()
    await tmux.wait_for(r"^local\$")
    await tmux.type(app_command(gateway.url, code))
    await tmux.wait_for(r"^paired with runner ")
    await tmux.wait_for(r"^\$ $")  # the remote prompt


async def test_a_person_uses_the_remote_terminal(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux
) -> None:
    await start_terminal(tmux, gateway, runner)

    # A command's output shows.
    await tmux.type("echo out-$((6*7)) && whoami")
    await tmux.wait_for(r"^out-42$")

    # stty size is the tmux window's size, at start and after a resize.
    rows, cols = await tmux.pane_size()
    await tmux.type("echo size-$((1+1)) $(stty size)")
    await tmux.wait_for(rf"^size-2 {rows} {cols}$")
    await tmux.resize(123, 41)
    assert await tmux.pane_size() == (41, 123)
    await tmux.type("echo size-$((1+2)) $(stty size)")
    await tmux.wait_for(r"^size-3 41 123$")

    # UTF-8 cut between reads of the pty (so between runner:outputs) shows intact.
    await tmux.type(r"printf 'U=\xe2\x9c'; sleep 0.5; printf '\x93=U\n'")
    await tmux.wait_for(r"^U=✓=U$")
    await tmux.type(r"printf 'V=\xe4'; sleep 0.4; printf '\xb8'; sleep 0.4; printf '\xad=V\n'")
    await tmux.wait_for(r"^V=中=V$")

    # Ctrl-C interrupts a running sleep (the shell is back long before 100 s).
    started = time.monotonic()
    await tmux.type("sleep 100")
    await tmux.wait_for(r"^\$ sleep 100$")
    await tmux.keys("C-c")
    await tmux.type("echo int-$((2*5))")
    await tmux.wait_for(r"^int-10$", timeout=20)
    assert time.monotonic() - started < 60

    # A full-screen program draws and quits cleanly (alternate screen left, prompt back).
    await tmux.type("printf 'first line of the file\\nsecond: %s\\n' $((3*3)) > /tmp/$$.txt")
    await tmux.type("vi -u NONE -i NONE /tmp/$$.txt")
    await tmux.wait_for(r"^second: 9$")
    await tmux.wait_for(r"^~ *$")  # vi's empty lines
    await tmux.type(":q!")
    await tmux.wait_gone(r"^second: 9$")
    await tmux.type("top -d 1 -n 100")
    first = (await tmux.wait_for(r"^top - \S+")).group(0)
    await tmux.wait_for(r"PID +USER")
    # The next frame: top is in its loop, reading keys (a key sent while it starts can be
    # flushed as it sets up the terminal, as for a person typing ahead).
    await tmux.wait_for(rf"^top - (?!{re.escape(first[6:])})\S+")
    await tmux.keys("q")  # top leaves its last screen in place (no alternate screen)
    await tmux.wait_for(r"^\$ $")
    await tmux.type("rm /tmp/$$.txt; echo fullscreen-$((4*4))")
    await tmux.wait_for(r"^fullscreen-16$")
    await tmux.wait_for(r"^\$ $")

    # exit ends the app with status 0, and the local terminal is itself again.
    assert await pane_icanon(tmux) == "-icanon"  # raw while the app runs
    await tmux.type("exit")
    await tmux.wait_for(r"^APP-EXIT=0$")
    await tmux.wait_for(r"^local\$")
    assert await pane_icanon(tmux) == "icanon"
    await runner.wait_line(r"^shell \d+ of app \S+ ended$")


async def runner_outputs(gateway: GatewayProcess) -> int:
    """runner:output events the gateway has acked, from its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    match = re.search(
        r'^gateway_events_total\{event="runner:output",result="success"\} (\S+)$', text, re.M
    )
    return 0 if match is None else int(float(match.group(1)))


async def pane_icanon(tmux: Tmux) -> str:
    """The canonical-mode flag of the person's terminal: ``-icanon`` while it is raw."""
    pane_tty = (await tmux.tmux("display-message", "-p", "-t", tmux.target, "#{pane_tty}")).strip()
    proc = await asyncio.create_subprocess_exec(
        "stty", "-a", "-F", pane_tty, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    flags = out.decode().split()
    return "-icanon" if "-icanon" in flags else "icanon" if "icanon" in flags else "?"


async def test_a_10_mib_cat_arrives_byte_exact(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux, tmp_path: Path
) -> None:
    """What the runner's pty prints reaches the app unchanged: sha256 of a 10 MiB cat."""
    content = base64.encodebytes(os.urandom(10 * 1024 * 1024 * 3 // 4))[: 10 * 1024 * 1024]
    source = tmp_path / "ten-mib.txt"
    source.write_bytes(content)
    received = tmp_path / "received.bin"
    code, _ = await runner.next_code()
    await tmux.wait_for(r"^local\$")
    # The app's output also goes to a file (tee); its tty is still the pane.
    await tmux.type(app_command(gateway.url, code, f" | tee {received}"))
    await tmux.wait_for(r"^paired with runner ")
    await tmux.wait_for(r"^ *\$ $")  # (tee's copy of the app's first lines may lack a CR)
    outputs_before = await runner_outputs(gateway)
    # -opost: the pty sends the file's newlines as they are (no CR added).
    await tmux.type(
        f"stty -opost; printf 'BEGIN-%s\\n' $((6*7)); cat {source}; printf 'END-%s\\n' $((6*7));"
        " stty opost"
    )
    started = time.monotonic()
    deadline = started + 120
    while b"END-42" not in received.read_bytes()[-4096:]:
        assert time.monotonic() < deadline, "the cat did not arrive"
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    out = received.read_bytes()
    begin = out.index(b"BEGIN-42\n") + len(b"BEGIN-42\n")
    end = out.index(b"END-42\n", begin)
    assert end - begin == len(content)
    assert hashlib.sha256(out[begin:end]).hexdigest() == hashlib.sha256(content).hexdigest()
    # Coalesced: the pty's reads (about 4 KiB each, some 2600 for the file) are not a
    # message each.
    messages = await runner_outputs(gateway) - outputs_before
    assert 40 <= messages < 1000, messages
    print(
        f"10 MiB cat through the relay in {elapsed:.2f} s: {10 / elapsed:.1f} MiB/s,"
        f" {messages} runner:output messages"
    )
    await tmux.type("exit")
    await tmux.wait_for(r"^APP-EXIT=0$")


async def test_escape_sequence_leaves_and_restores_the_terminal(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux
) -> None:
    await start_terminal(tmux, gateway, runner)
    # A ~ that does not start a line is typed as is; ~~ at a line start sends one ~.
    await tmux.type("echo a~b-$((1+1))")
    await tmux.wait_for(r"^a~b-2$")
    await tmux.type("~~=x-$((2+1))", enter=False)
    await tmux.keys("C-a")
    await tmux.type("echo ", enter=True)
    await tmux.wait_for(r"^~=x-3$")
    assert await pane_icanon(tmux) == "-icanon"
    await tmux.keys("~", ".")
    await tmux.wait_for(r"^\[app: left with ~\.")
    await tmux.wait_for(r"^APP-EXIT=255$")
    assert await pane_icanon(tmux) == "icanon"
    # The shell was left behind, not ended: the runner ends it when the app unpairs.
    assert not any(" ended" in line for line in runner.lines)


async def test_the_terminal_survives_a_gateway_restart(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux
) -> None:
    await start_terminal(tmux, gateway, runner)
    await tmux.type("KEPT=same-shell; echo set-$((5+5))")
    await tmux.wait_for(r"^set-10$")
    code_line = await runner.wait_line(r"^pairing code: ")

    # The gateway dies (SIGKILL: no goodbye to anyone) and comes back on the same port,
    # while the runner is stopped, so that the app is surely back first.
    runner.signal(signal.SIGSTOP)
    gateway.kill()
    await tmux.wait_for(r"^\[app: connection lost")
    # Typed while the gateway is down: the app sends it once it is connected again.
    await tmux.type("echo $KEPT-$((2+2))")
    gateway.start()
    await tmux.wait_for(r"^\[app: reconnected\]", timeout=30)
    # The gateway holds the input until the runner is back and resumes (register, lastSeq).
    runner.signal(signal.SIGCONT)
    await runner.wait_line(r"^pairing code: ", after=code_line + 1, timeout=30)
    await tmux.wait_for(r"^same-shell-4$")
    # Still the same shell, in the same window size, and interactive.
    rows, cols = await tmux.pane_size()
    await tmux.type("echo size-$((3*3)) $(stty size)")
    await tmux.wait_for(rf"^size-9 {rows} {cols}$")
    await tmux.type("exit")
    await tmux.wait_for(r"^APP-EXIT=0$")


async def test_exit_status_and_signals_restore_the_terminal(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux
) -> None:
    me = f"remote-terminal-{secrets.token_hex(8)}"
    code, _ = await runner.next_code()
    await tmux.wait_for(r"^local\$")
    await tmux.type(app_command(gateway.url, code, "", "--app-session-id", me))
    await tmux.wait_for(r"^\$ $")
    await tmux.type("exit 3")
    await tmux.wait_for(r"^APP-EXIT=3$")
    assert await pane_icanon(tmux) == "icanon"

    # The pairing stays: the same appSessionId comes back without a code, to a new shell.
    await tmux.type(app_command(gateway.url, None, "", "--app-session-id", me))
    await tmux.wait_for(r"^\$ $")
    await tmux.type("echo again-$((8+8))")
    await tmux.wait_for(r"^again-16$")
    assert await pane_icanon(tmux) == "-icanon"
    # SIGTERM (a closing terminal emulator, a kill): 128 + 15, the terminal restored.
    os.kill(await app_pid(tmux), signal.SIGTERM)
    await tmux.wait_for(r"^\[app: ended by SIGTERM\]$")
    await tmux.wait_for(r"^APP-EXIT=143$")
    assert await pane_icanon(tmux) == "icanon"


async def app_pid(tmux: Tmux) -> int:
    """The app's process: the child of the pane's local shell."""
    shell = int(await tmux.tmux("display-message", "-p", "-t", tmux.target, "#{pane_pid}"))
    proc_children = Path(f"/proc/{shell}/task/{shell}/children")
    children = (await asyncio.to_thread(proc_children.read_text)).split()
    assert len(children) == 1, children
    return int(children[0])


async def test_the_app_resumes_its_screen_after_its_network_froze(
    gateway: GatewayProcess, runner: RunnerProcess, tmux: Tmux
) -> None:
    """A phone switching networks: the app's connection freezes (no FIN, no RST) while the
    shell prints; the app reconnects by itself and, with lastSeq, misses no line."""
    proxy = await FreezingProxy(gateway.port).start()
    try:
        code, _ = await runner.next_code()
        await tmux.wait_for(r"^local\$")
        await tmux.type(app_command(proxy.url, code))
        await tmux.wait_for(r"^\$ $")
        await tmux.type("for i in $(seq 1 80); do echo n-$i; sleep 0.05; done; echo loop-$((3*4))")
        await tmux.wait_for(r"^n-5$")
        proxy.freeze()
        # (The replay may scroll these notices off the screen: look in tmux's history too.)
        await tmux.wait_for(r"^\[app: connection lost", timeout=20, history=True)
        await tmux.type("echo typed-$((9*9))")  # typed while away: sent after the reconnect
        await tmux.wait_for(r"^\[app: reconnected\]", timeout=20, history=True)
        await tmux.wait_for(r"^loop-12$", timeout=30)
        await tmux.wait_for(r"^typed-81$")
        screen = await tmux.screen(history=True)
        # Not anchored at the line's start: the shell echoes the typed line where it arrives,
        # which on a slow machine is mid-loop ("echo typed-$((9*9))n-48").
        numbers = [int(n) for n in re.findall(r"n-(\d+)$", screen, re.MULTILINE)]
        assert numbers == list(range(1, 81)), screen
        assert "lost;" not in screen  # no terminal:gap: the hold had every line
    finally:
        await proxy.close()
