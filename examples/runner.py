#!/usr/bin/env python3
"""A runner daemon for the pairing gateway: the machine that an app controls.

It connects, registers and prints its pairing code (type it into the app), heartbeats at
the interval the register ack names (``heartbeatIntervalMs``), and answers each
``terminal:input`` with a ``runner:output`` to the app that sent it. When the connection
drops (a gateway restart or deploy, a network loss, the laptop waking from sleep) it
reconnects with exponential backoff and registers again, which prints a new pairing code.
Apps stay paired when the gateway kept the pairing (a replica that stopped or crashed, the
runner back within the heartbeat timeout); a runner whose disconnect the gateway saw, or
that stayed away too long, was unpaired and its apps pair again with the new code.

On first start it makes a runnerKey (a random secret, in a file of mode 0600 under
``$XDG_STATE_HOME/pairing-runner/``, or ``--key-file``) and sends it with every
registration: the gateway binds the runnerId to it, so nobody else can take this runner over.
Keep the file; if it is lost, an operator releases the id (``pairing-gateway runner release``).

By default it only echoes what it receives. With ``--exec`` it runs each input as a shell
command and sends back the output. With ``--pty`` it is a remote terminal: each paired app
gets a shell (``--shell``, default ``$SHELL``) in a pseudo-terminal of its own; its
``terminal:input`` bytes are typed into it, ``terminal:resize`` sets its window size, and
what the pseudo-terminal prints goes back to that app as binary ``runner:output``, in order,
coalesced (one message per 64 KiB read or per few milliseconds of output, not one per
read). The shells outlive a reconnect of the runner, so a gateway restart or a network drop
does not end them, and its ``runner:register`` names, per app with a shell, the ``seq`` of
the last input it typed (``lastSeq``): inputs the gateway held meanwhile come first, once,
and a ``terminal:gap`` (inputs no longer held) is printed. When a shell ends, the app gets
one last ``runner:output`` whose data is the object ``{"exit": status}`` (the shell's exit
status, or 128 + the signal that killed it); the next input from that app starts a new
shell. ``pairing:app_unpaired`` ends the app's shell (SIGHUP). With ``--exec`` or ``--pty``
anyone paired with it can run commands as this user, so use them only with apps you trust.

    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1
    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1 --exec
    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1 --pty

Needs python-socketio[asyncio_client] (installed with the gateway). Stop it with Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import random
import secrets
import shlex
import signal
import socket
import struct
import termios
from pathlib import Path
from typing import Any

import aiohttp
import socketio


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def load_key(path: Path) -> str:
    """This runner's key: read from ``path``, or made there (mode 0600) on first start."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)  # 256 bits, 43 chars of the runnerKey alphabet
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this runner made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    say(f"made a new runner key in {path}")
    return key


def default_key_file(runner_id: str) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "pairing-runner" / f"{runner_id}.key"


async def answer(args: argparse.Namespace, data: Any) -> Any:
    """What the runner sends back for one input: an echo, or the command's output."""
    if not args.exec:
        return f"echo: {data}"
    proc = await asyncio.create_subprocess_shell(
        str(data), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), args.exec_timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"timed out after {args.exec_timeout} s"
    return output.decode(errors="replace")


#: Largest read from a pseudo-terminal, and most bytes in one runner:output.
READ_CHUNK = 65536
MAX_MESSAGE = 256 * 1024
#: How long output is gathered before it is sent: a burst becomes a few large messages.
COALESCE_S = 0.003
#: Output waiting to be sent past which the pty is no longer read (the shell then blocks
#: on its writes, as on a slow terminal, instead of the runner's memory growing).
MAX_PENDING = 4 * 1024 * 1024


class Link:
    """The current connection, for tasks that outlive one (the shells' output senders)."""

    def __init__(self) -> None:
        self.sio: socketio.AsyncClient | None = None
        self.up = asyncio.Event()
        self.ack_timeout = 10.0

    def attach(self, sio: socketio.AsyncClient) -> None:
        self.sio = sio
        self.up.set()

    def detach(self) -> None:
        self.sio = None
        self.up.clear()

    async def call(self, event: str, data: Any) -> Any:
        """Emit with an ack on the current connection, waiting for one; retried until acked."""
        while True:
            await self.up.wait()
            sio = self.sio
            assert sio is not None
            try:
                return await sio.call(event, data, timeout=self.ack_timeout)
            except (TimeoutError, socketio.exceptions.SocketIOError):
                if self.sio is sio:  # the connection is dead: wait for the next one
                    self.up.clear()


class Shell:
    """One app's shell in a pseudo-terminal, and the sender of what it prints."""

    def __init__(self, app: str, argv: list[str], link: Link, term: str) -> None:
        self.app = app
        self.link = link
        self.pending = bytearray()
        self.more = asyncio.Event()
        self.reading = False
        self.ended = False
        env = dict(os.environ, TERM=term)
        pid, fd = os.forkpty()
        if pid == 0:  # the child: only exec (or exit) here
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self._resume_reading()
        self.sender = asyncio.create_task(self._send())

    def _resume_reading(self) -> None:
        if not self.reading and not self.ended:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def _pause_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every process on the terminal's other side is gone
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._pause_reading()
            self.ended = True
        else:
            self.pending += data
            if len(self.pending) >= MAX_PENDING:
                self._pause_reading()
        self.more.set()

    def write(self, data: bytes) -> None:
        """Keystrokes into the terminal (small: a short blocking write if the buffer is full)."""
        view = memoryview(data)
        while view and not self.ended:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                os.set_blocking(self.fd, True)
                try:
                    view = view[os.write(self.fd, view) :]
                finally:
                    os.set_blocking(self.fd, False)
            except OSError:
                return

    def resize(self, cols: int, rows: int) -> None:
        """TIOCSWINSZ; the kernel tells the foreground programs (SIGWINCH)."""
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def _send(self) -> None:
        while True:
            await self.more.wait()
            if not self.ended:
                await asyncio.sleep(COALESCE_S)  # let a burst gather
            self.more.clear()
            while self.pending:
                chunk = bytes(self.pending[:MAX_MESSAGE])
                del self.pending[:MAX_MESSAGE]
                self._resume_reading()  # below the limit again
                await self.link.call("runner:output", {"data": chunk, "appSessionId": self.app})
            if self.ended:
                break
        status = await asyncio.to_thread(self._wait)
        os.close(self.fd)
        await self.link.call("runner:output", {"data": {"exit": status}, "appSessionId": self.app})

    def _wait(self) -> int:
        _, raw = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(raw):
            return 128 + os.WTERMSIG(raw)
        return os.waitstatus_to_exitcode(raw)

    def hang_up(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.pid), signal.SIGHUP)


class Terminals:
    """The shells, one per app, kept across the runner's reconnects."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.argv = shlex.split(args.shell or os.environ.get("SHELL") or "/bin/sh")
        self.term = args.term
        self.link = Link()
        self.link.ack_timeout = args.ack_timeout
        self.shells: dict[str, Shell] = {}
        #: Newest seq of terminal:input seen per app (resume: runner:register's lastSeq).
        self.last_seq: dict[str, int] = {}

    def shell(self, app: str) -> Shell:
        shell = self.shells.get(app)
        if shell is None or shell.ended:
            shell = self.shells[app] = Shell(app, self.argv, self.link, self.term)
            shell.sender.add_done_callback(lambda _, s=shell: self._gone(s))
            say(f"shell {shell.pid} started for app {app}")
        return shell

    def _gone(self, shell: Shell) -> None:
        if self.shells.get(shell.app) is shell:
            del self.shells[shell.app]
        say(f"shell {shell.pid} of app {shell.app} ended")

    def resume_from(self) -> dict[str, int]:
        """runner:register's lastSeq: every app with a shell here (0: none of its input yet)."""
        apps = {app: self.last_seq.get(app, 0) for app in self.shells}
        return {**apps, **self.last_seq}

    def on_gap(self, msg: dict[str, Any]) -> None:
        """Inputs the gateway no longer held when this runner resumed: typed, then lost."""
        say(f"app {msg.get('appSessionId')}: {msg.get('missed')} inputs were lost")

    def fresh(self, msg: dict[str, Any]) -> bool:
        """Whether an input is new (a replay after a resume may repeat what came already)."""
        app, seq = msg.get("appSessionId"), msg.get("seq")
        if not isinstance(app, str) or not isinstance(seq, int):
            return True
        if seq <= self.last_seq.get(app, 0):
            return False
        self.last_seq[app] = seq
        return True

    def on_input(self, msg: dict[str, Any]) -> None:
        app, data = msg.get("appSessionId"), msg.get("data")
        if not isinstance(app, str) or not self.fresh(msg):
            return
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, bytes):
            self.shell(app).write(data)

    def on_resize(self, msg: dict[str, Any]) -> None:
        app, cols, rows = msg.get("appSessionId"), msg.get("cols"), msg.get("rows")
        if isinstance(app, str) and isinstance(cols, int) and isinstance(rows, int):
            self.shell(app).resize(cols, rows)

    def on_unpaired(self, app: str) -> None:
        shell = self.shells.get(app)
        if shell is not None:
            shell.hang_up()
        self.last_seq.pop(app, None)

    async def close(self) -> None:
        for shell in list(self.shells.values()):
            shell.hang_up()
        senders = [s.sender for s in self.shells.values()]
        for task in senders:
            task.cancel()
        for task in senders:
            with contextlib.suppress(BaseException):
                await task


async def session(args: argparse.Namespace) -> bool:
    """One connection, from connect to disconnect. Returns whether it registered."""
    async with aiohttp.ClientSession() as http:  # closed even when connecting fails
        return await _session(args, socketio.AsyncClient(reconnection=False, http_session=http))


async def _session(args: argparse.Namespace, sio: socketio.AsyncClient) -> bool:
    gone = asyncio.Event()
    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @sio.event
    async def disconnect(reason: Any = None) -> None:
        say(f"connection lost: {reason}")
        gone.set()

    terminals: Terminals | None = args.terminals

    # Handlers take ``*_``: with socketio.connection_state_recovery on, every event carries
    # an offset as one more argument.
    @sio.on("terminal:input")
    async def on_input(msg: dict[str, Any], *_: Any) -> None:
        if terminals is not None:
            terminals.on_input(msg)
        else:
            inputs.put_nowait(msg)  # answered in order by the worker below

    @sio.on("terminal:resize")
    async def on_resize(msg: dict[str, Any], *_: Any) -> None:
        if terminals is not None:
            terminals.on_resize(msg)

    @sio.on("terminal:gap")
    async def on_gap(msg: dict[str, Any], *_: Any) -> None:
        if terminals is not None:
            terminals.on_gap(msg)

    @sio.on("pairing:paired")
    async def on_paired(msg: dict[str, Any], *_: Any) -> None:
        say(f"paired with app {msg['appSessionId']}")

    @sio.on("pairing:app_unpaired")
    async def on_unpaired(msg: dict[str, Any], *_: Any) -> None:
        say(f"app {msg['appSessionId']} unpaired")
        if terminals is not None:
            terminals.on_unpaired(msg["appSessionId"])

    async def worker() -> None:
        while True:
            msg = await inputs.get()
            data = await answer(args, msg.get("data"))
            reply = {"data": data, "appSessionId": msg.get("appSessionId")}
            await sio.call("runner:output", reply, timeout=args.ack_timeout)

    async def heartbeat(interval_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), interval_s)
                return
            ack = await sio.call(
                "runner:heartbeat", {"runnerId": args.runner_id}, timeout=args.ack_timeout
            )
            if not ack.get("success"):  # e.g. NOT_REGISTERED: another process took over
                say(f"heartbeat refused: {ack.get('error')} {ack.get('message')}")
                return

    try:
        await sio.connect(args.url, transports=["websocket"], wait_timeout=args.ack_timeout)
    except socketio.exceptions.ConnectionError as exc:
        say(f"cannot connect to {args.url}: {exc}")
        await sio.shutdown()
        return False
    tasks: list[asyncio.Task[None]] = []
    try:
        payload: dict[str, Any] = {"runnerId": args.runner_id, "runnerKey": args.key}
        if terminals is not None and terminals.resume_from():
            # Resume: the inputs the gateway holds after these come first.
            payload["lastSeq"] = terminals.resume_from()
        if args.code:
            payload["pairingCode"] = args.code
        if args.secret:
            key = args.secret.encode()
            payload["token"] = hmac.new(key, args.runner_id.encode(), hashlib.sha256).hexdigest()
        ack = await sio.call("runner:register", payload, timeout=args.ack_timeout)
        if not ack.get("success"):
            say(f"register refused: {ack.get('error')} {ack.get('message')}")
            return False
        say(f"pairing code: {ack['pairingCode']}  (runner {args.runner_id})")
        if terminals is not None:
            terminals.link.attach(sio)
        tasks = [
            asyncio.create_task(worker()),
            asyncio.create_task(heartbeat(ack["heartbeatIntervalMs"] / 1000)),
        ]
        # Until the connection ends, or a task fails (an ack that never came: the
        # connection is dead even if no disconnect was seen yet).
        waiter = asyncio.create_task(gone.wait())
        tasks.append(waiter)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                say(f"connection failed: {task.exception()!r}")
        return True
    except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
        say(f"connection failed: {exc!r}")
        return False
    finally:
        if terminals is not None:
            terminals.link.detach()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await sio.disconnect()
        await sio.shutdown()


async def main(args: argparse.Namespace) -> None:
    args.terminals = Terminals(args) if args.pty else None
    try:
        await reconnecting(args)
    finally:
        if args.terminals is not None:
            await args.terminals.close()


async def reconnecting(args: argparse.Namespace) -> None:
    delay = args.min_backoff
    while True:
        if await session(args):
            delay = args.min_backoff  # it was up: start the backoff over
        wait = delay * random.uniform(0.5, 1.0)  # jitter: runners do not return in lockstep
        say(f"disconnected; reconnecting in {wait:.1f} s")
        await asyncio.sleep(wait)
        delay = min(delay * 2, args.max_backoff)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    parser.add_argument(
        "--runner-id", default=socket.gethostname(), help="runner id (default: host name)"
    )
    parser.add_argument("--code", help="propose this pairing code (default: the gateway's)")
    parser.add_argument("--secret", help="the gateway's auth.runner_secret, if it has one")
    parser.add_argument(
        "--key-file",
        type=Path,
        help="this runner's key (made on first start; default "
        "$XDG_STATE_HOME/pairing-runner/<runner-id>.key)",
    )
    parser.add_argument(
        "--exec", action="store_true", help="run inputs as shell commands (trusted apps only)"
    )
    parser.add_argument(
        "--pty", action="store_true", help="a shell per app in a pseudo-terminal (trusted apps)"
    )
    parser.add_argument("--shell", help="the shell for --pty, a command line (default: $SHELL)")
    parser.add_argument(
        "--term", default=os.environ.get("TERM", "xterm-256color"), help="TERM for --pty shells"
    )
    parser.add_argument("--exec-timeout", type=float, default=30.0, help="seconds per command")
    parser.add_argument("--min-backoff", type=float, default=1.0, help="first retry delay, s")
    parser.add_argument("--max-backoff", type=float, default=30.0, help="longest retry delay, s")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="seconds to wait for acks")
    return parser.parse_args(argv)


def run() -> None:
    args = parse_args()
    args.key = load_key(args.key_file or default_key_file(args.runner_id))

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main(args)
        say("stopped")

    asyncio.run(guarded())


if __name__ == "__main__":
    run()
