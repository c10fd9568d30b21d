"""Helpers for gateway tests: settings with test timings, gateway processes, clients."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.paths import ROOT
from tests.support.redis_server import free_port

#: Test timings in seconds (the production values are 10/30/60/5).
TEST_CONFIG: dict[str, Any] = {
    "host": "127.0.0.1",
    "heartbeat": {"interval_s": 0.5, "timeout_s": 1.5, "ttl_s": 5},
    "sweep_interval_s": 0.3,
    "pairing_code": {"ttl_s": 30},
    # Every test client registers from 127.0.0.1: one address for the whole suite, so the
    # registration limit is lifted here; tests of the limit set their own.
    "rate_limit": {"pair_failures": 5, "window_s": 60, "registrations": 100_000},
    "socketio": {"ping_interval_s": 1, "ping_timeout_s": 1},
    "store_timeout_s": 1.0,
    "log_format": "json",
    "log_level": "info",
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class GatewayProcess:
    """``python -m gateway`` in its own process, stopped by pid (SIGTERM or SIGKILL)."""

    redis_url: str
    config: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cfg = merged(TEST_CONFIG, self.config)
        cfg["redis_url"] = self.redis_url
        cfg["port"] = self.port
        fd, cfg_path = tempfile.mkstemp(prefix="gw-", suffix=".yaml")
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(cfg, fh)
        fd, self.log_path = tempfile.mkstemp(prefix="gw-", suffix=".log")
        log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", cfg_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()
        except OSError:
            return ""

    def terminate(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class Client:
    """A python-socketio client that records every server event in per-event queues.

    Relayed events (``terminal:input``, ``terminal:output``) carry a ``seq``: ``queues`` gets
    them without it (tests about delivery and order compare data), ``raw`` as they came
    (tests about seq and resume), and a payload without an integer seq fails the test.
    """

    EVENTS = (
        "pairing:paired",
        "pairing:app_unpaired",
        "pairing:unpaired",
        "terminal:input",
        "terminal:output",
        "terminal:resize",
        "terminal:gap",
    )
    SEQ_EVENTS = ("terminal:input", "terminal:output")

    def __init__(self, **client_kwargs: Any) -> None:
        self.sio = socketio.AsyncClient(**client_kwargs)
        self.queues: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.raw: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.missing_seq: list[Any] = []
        #: Offsets of the events that carried one (connection state recovery on), by event.
        self.offsets: dict[str, list[str]] = defaultdict(list)
        for name in self.EVENTS:
            self.sio.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(*args: Any) -> None:
            if len(args) == 2 and type(args[1]) is str:
                # socketio.connection_state_recovery: the event's offset, kept apart
                self.offsets[name].append(args[1])
                args = args[:1]
            payload = args[0] if len(args) == 1 else args
            if name in self.SEQ_EVENTS:
                self.raw[name].put_nowait(payload)
                if isinstance(payload, dict) and type(payload.get("seq")) is int:
                    payload = {k: v for k, v in payload.items() if k != "seq"}
                else:
                    self.missing_seq.append(payload)
            self.queues[name].put_nowait(payload)

        return record

    async def connect(
        self,
        url: str,
        *,
        auth: Any = None,
        transports: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Client:
        await self.sio.connect(
            url,
            auth=auth,
            transports=transports or ["websocket"],
            headers=headers or {},
            wait_timeout=10,
        )
        return self

    async def call(self, event: str, *args: Any, timeout: float = 10) -> Any:
        """Emit with an ack; no args sends no argument, several send several."""
        data = None if not args else args[0] if len(args) == 1 else tuple(args)
        return await self.sio.call(event, data, timeout=timeout)

    async def next(self, event: str, timeout: float = 10) -> Any:
        return await asyncio.wait_for(self.queues[event].get(), timeout)

    def pending(self, event: str) -> int:
        return self.queues[event].qsize()

    async def close(self) -> None:
        assert not self.missing_seq, f"relayed without an integer seq: {self.missing_seq[:3]}"
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()


def watch_disconnect(client: Client) -> asyncio.Event:
    """An event set when the server (or anything) disconnects ``client``."""
    gone = asyncio.Event()

    async def on_disconnect(*_: Any) -> None:
        gone.set()

    client.sio.on("disconnect", on_disconnect)
    return gone


async def emit_unacked(
    client: Client, event: str, payloads: Iterable[Any]
) -> list[asyncio.Future[Any]]:
    """Emit every payload in order without waiting for acks; returns one future per ack."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    for payload in payloads:
        fut: asyncio.Future[Any] = loop.create_future()

        def done(*args: Any, fut: asyncio.Future[Any] = fut) -> None:
            if not fut.done():
                fut.set_result(args[0] if len(args) == 1 else args)

        futures.append(fut)
        await client.sio.emit(event, payload, callback=done)
    return futures


@dataclass
class RunningGateway:
    """An in-process gateway (the ``start_gateway`` fixture's replicas) on a real socket."""

    app: web.Application
    server: TestServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"
