"""Command lines of the runner and the app (examples/runner.py and examples/app.py run these;
so does ``python -m pairing_client runner|app``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .app import REFUSED, App, AppConfig
from .connection import say
from .runner import Runner, RunnerConfig
from .state import load_runner_key, state_home
from .terminal import LocalTerminal

RUNNER_DOC = """A runner daemon for the pairing gateway: the machine that an app controls.

It connects, registers and prints its pairing code, ``pairing code: <nameplate>-<secret>``:
the nameplate is the gateway's code, the secret is made here and never sent to the gateway.
The app and the runner run a password-authenticated key exchange (CPace) over the relay with
the secret, and everything after it (keystrokes, output, window size) is end-to-end encrypted:
the gateway relays ciphertext. A wrong secret spends the code: the runner refuses that app and
prints a new code. ``--plain`` keeps the unencrypted protocol (code = nameplate only), for apps
that do not encrypt.

It heartbeats, reconnects with backoff after a drop (registering again prints a new code; paired
apps stay paired when the gateway kept the pairing), and resumes: held inputs come once, records
not acked before a drop are sent again and the app drops what it has. On first start it makes a
runnerKey (``$XDG_STATE_HOME/pairing-runner/<runner-id>.key``, mode 0600, or ``--key-file``)
that binds the runnerId at the gateway.

By default it echoes what it receives; ``--exec`` runs each input as a shell command; ``--pty``
gives each paired app a shell (``--shell``) in a pseudo-terminal of its own. With ``--exec`` or
``--pty`` whoever pairs can run commands as this user: give the code only to yourself.
"""

APP_DOC = """An app for the pairing gateway: pairs with a runner by its code, sends commands and
prints the output; without commands it is a terminal on the runner (``runner.py --pty``).

``--code <nameplate>-<secret>`` pairs end to end encrypted (only the nameplate reaches the
gateway); a code without a secret is a plain runner's. Without ``--code`` it resumes the pairing
of ``--app-session-id``, re-keying from the pairing key stored at the first pairing
(``$XDG_STATE_HOME/pairing-app/``, mode 0600).

Exit status: 0 when every command got its output (a terminal: the remote shell exited 0; its
status when not 0), 1 when the gateway refused or the pairing ended, 2 when the code was wrong
(the runner shows a new one), 3 when output was missing after ``--wait`` seconds, 4 when a
message failed authentication (altered in transit: never shown), 255 when left with ``~.``,
128 + N on signal N.
"""


def runner_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=RUNNER_DOC.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    p.add_argument("--runner-id", default=socket.gethostname(), help="runner id (default: host)")
    p.add_argument("--code", help="propose this nameplate (default: the gateway's)")
    p.add_argument("--secret", help="the gateway's auth.runner_secret, if it has one")
    p.add_argument("--key-file", type=Path, help="this runner's key (made on first start)")
    p.add_argument("--plain", action="store_true", help="no end-to-end encryption")
    p.add_argument("--exec", action="store_true", help="run inputs as shell commands")
    p.add_argument("--pty", action="store_true", help="a shell per app in a pseudo-terminal")
    p.add_argument("--shell", help="the shell for --pty, a command line (default: $SHELL)")
    p.add_argument(
        "--term", default=os.environ.get("TERM", "xterm-256color"), help="TERM for --pty shells"
    )
    p.add_argument("--exec-timeout", type=float, default=30.0, help="seconds per command")
    p.add_argument("--min-backoff", type=float, default=1.0, help="first retry delay, s")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest retry delay, s")
    p.add_argument("--ack-timeout", type=float, default=10.0, help="seconds to wait for acks")
    return p


def runner_main(argv: list[str] | None = None) -> None:
    args = runner_parser().parse_args(argv)
    state = state_home() / "pairing-runner"
    key_file = args.key_file or state / f"{args.runner_id}.key"
    key, made = load_runner_key(key_file)
    if made:
        say(f"made a new runner key in {key_file}")
    config = RunnerConfig(
        url=args.url,
        runner_id=args.runner_id,
        runner_key=key,
        auth_secret=args.secret,
        proposed_code=args.code,
        mode="pty" if args.pty else "exec" if args.exec else "echo",
        e2e=not args.plain,
        shell=shlex.split(args.shell or os.environ.get("SHELL") or "/bin/sh"),
        term=args.term,
        exec_timeout=args.exec_timeout,
        ack_timeout=args.ack_timeout,
        min_backoff=args.min_backoff,
        max_backoff=args.max_backoff,
        pairings_file=key_file.with_name(f"{key_file.stem}.pairings.json"),
    )

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await Runner(config).run()
        say("stopped")

    asyncio.run(guarded())


def app_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=APP_DOC.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    p.add_argument("--code", help="the runner's pairing code (omit to resume a pairing)")
    p.add_argument("--app-session-id", help="16-128 chars of A-Z a-z 0-9 _ - (default: random)")
    p.add_argument("--plain", action="store_true", help="the code is a plain runner's")
    p.add_argument("--state-dir", type=Path, help="where pairing keys are kept")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for answers")
    p.add_argument("commands", nargs="*", help="commands to send (none: a terminal)")
    return p


async def app_commands(app: App, commands: list[str], wait: float) -> int:
    outputs: asyncio.Queue[Any] = asyncio.Queue()
    app.on_data = outputs.put_nowait
    session = asyncio.create_task(app.run())
    try:
        ready = asyncio.create_task(app.ready.wait())
        await asyncio.wait([session, ready], timeout=wait * 3, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if session.done():
                status, message = session.result()
                say(message)
                return status
            say(f"no session within {wait * 3} s")
            return 3
        if app.config.code is not None:
            mode = "end-to-end encrypted" if app.e2e else "not encrypted"
            say(f"paired with runner {app.runner_id} as app {app.app_id} ({mode})")
        for command in commands:
            app.send(command)
        for _ in commands:  # one output per command from the example runner
            getter = asyncio.create_task(outputs.get())
            await asyncio.wait([getter, session], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if session.done():
                getter.cancel()
                status, message = session.result()
                say(message)
                return status
            if not getter.done():
                getter.cancel()
                say(f"no output within {wait} s")
                return REFUSED if app.refusals else 3
            data = getter.result()
            if isinstance(data, bytes):
                data = data.decode(errors="replace")
            text = data if isinstance(data, str) else repr(data)
            print(text, end="" if text.endswith("\n") else "\n", flush=True)
        return REFUSED if app.refusals else 0
    finally:
        session.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session


async def app_run(args: argparse.Namespace) -> int:
    app = App(
        AppConfig(
            url=args.url,
            app_session_id=args.app_session_id,
            code=args.code,
            plain=args.plain,
            state_dir=args.state_dir,
            ack_timeout=args.wait,
        )
    )
    if args.commands:
        return await app_commands(app, args.commands, args.wait)
    return await LocalTerminal(app, args.wait).run()


def app_main(argv: list[str] | None = None) -> int:
    return asyncio.run(app_run(app_parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["runner"]:
        runner_main(argv[1:])
        return 0
    if argv[:1] == ["app"]:
        return app_main(argv[1:])
    print("usage: python -m pairing_client runner|app [options] (--help for each)")
    return 2
