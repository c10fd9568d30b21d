#!/usr/bin/env python3
"""An app for the pairing gateway: pairs with a runner by its code, sends commands, prints
the output.

    python examples/app.py --url http://127.0.0.1:8080 --code K7M2P9QXRT "ls -la" "uptime"

A real app keeps its ``appSessionId`` (here ``--app-session-id``; a random one otherwise)
and presents it again after a reconnect: its pairing is still there, so it only pairs once.
Exit status: 0 when every command got its output, 1 when the gateway refused something,
3 when output was missing after ``--wait`` seconds.

Needs python-socketio[asyncio_client] (installed with the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

import socketio


def say(*parts: Any) -> None:
    print(*parts, flush=True)


async def main(args: argparse.Namespace) -> int:
    sio = socketio.AsyncClient(reconnection=False)
    outputs: asyncio.Queue[Any] = asyncio.Queue()

    @sio.on("terminal:output")
    async def on_output(msg: dict[str, Any]) -> None:
        outputs.put_nowait(msg["data"])

    @sio.on("pairing:unpaired")
    async def on_unpaired(msg: dict[str, Any]) -> None:
        say(f"unpaired from runner {msg['runnerId']}: {msg['reason']}")

    auth = {"appSessionId": args.app_session_id or secrets.token_urlsafe(18)}
    try:
        await sio.connect(args.url, auth=auth, transports=["websocket"], wait_timeout=args.wait)
    except socketio.exceptions.ConnectionError as exc:
        say(f"cannot connect to {args.url}: {exc}")
        await sio.shutdown()
        return 1
    try:
        if args.code:
            ack = await sio.call("app:pair", {"pairingCode": args.code}, timeout=args.wait)
            if not ack.get("success"):
                say(f"pairing refused: {ack['error']} ({ack['message']})")
                return 1
            say(f"paired with runner {ack['runnerId']} as app {ack['appSessionId']}")
        for command in args.commands:
            ack = await sio.call("app:command", {"data": command}, timeout=args.wait)
            if not ack.get("success"):
                say(f"command refused: {ack['error']} ({ack['message']})")
                return 1
        for _ in args.commands:  # one output per command from the example runner
            try:
                data = await asyncio.wait_for(outputs.get(), args.wait)
            except TimeoutError:
                say(f"no output within {args.wait} s")
                return 3
            text = data if isinstance(data, str) else repr(data)
            print(text, end="" if text.endswith("\n") else "\n", flush=True)
        return 0
    finally:
        await sio.disconnect()  # the pairing stays: reconnect with the same id to resume
        await sio.shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="gateway URL")
    parser.add_argument("--code", help="the runner's pairing code (omit to resume a pairing)")
    parser.add_argument(
        "--app-session-id", help="16-128 chars of A-Z a-z 0-9 _ - (default: a random one)"
    )
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for answers")
    parser.add_argument("commands", nargs="*", help="commands to send to the runner")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
