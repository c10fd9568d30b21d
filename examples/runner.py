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

By default it only echoes what it receives. With ``--exec`` it runs each input as a shell
command and sends back the output: anyone paired with it can then run commands as this
user, so use that only with apps you trust.

    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1
    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1 --exec

Needs python-socketio[asyncio_client] (installed with the gateway). Stop it with Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import random
import signal
import socket
from typing import Any

import aiohttp
import socketio


def say(*parts: Any) -> None:
    print(*parts, flush=True)


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

    @sio.on("terminal:input")
    async def on_input(msg: dict[str, Any]) -> None:
        inputs.put_nowait(msg)  # answered in order by the worker below

    @sio.on("pairing:paired")
    async def on_paired(msg: dict[str, Any]) -> None:
        say(f"paired with app {msg['appSessionId']}")

    @sio.on("pairing:app_unpaired")
    async def on_unpaired(msg: dict[str, Any]) -> None:
        say(f"app {msg['appSessionId']} unpaired")

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
        payload = {"runnerId": args.runner_id}
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
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await sio.disconnect()
        await sio.shutdown()


async def main(args: argparse.Namespace) -> None:
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
        "--exec", action="store_true", help="run inputs as shell commands (trusted apps only)"
    )
    parser.add_argument("--exec-timeout", type=float, default=30.0, help="seconds per command")
    parser.add_argument("--min-backoff", type=float, default=1.0, help="first retry delay, s")
    parser.add_argument("--max-backoff", type=float, default=30.0, help="longest retry delay, s")
    parser.add_argument("--ack-timeout", type=float, default=10.0, help="seconds to wait for acks")
    return parser.parse_args(argv)


def run() -> None:
    args = parse_args()

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
