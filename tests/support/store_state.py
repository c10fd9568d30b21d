"""Helpers for the pairing/ tests: the server's clock, raw heartbeats, key scans, MONITOR."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pairing import keys
from pairing.store import Redis


def text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


async def server_now_ms(client: Redis) -> int:
    """The Redis server's clock (TIME) in epoch ms: the clock the services judge by."""
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def write_heartbeat(
    client: Redis, runner_id: str, at_ms: int, *, ttl_ms: int = 60_000
) -> None:
    """Write a heartbeat as if the runner had beaten at ``at_ms`` (server clock)."""
    await client.set(keys.heartbeat(runner_id), str(at_ms), px=ttl_ms)
    await client.zadd(keys.RUNNER_LAST_SEEN, {runner_id: at_ms})


async def write_session(client: Redis, app: str, runner: str, paired_at: int = 1) -> None:
    """A session key written directly (as another implementation would), no set update."""
    body = {"appSessionId": app, "runnerId": runner, "pairedAt": paired_at, "isActive": True}
    await client.set(keys.session(app), json.dumps(body))


async def wait_gone(client: Redis, key: str, within_s: float = 5.0) -> None:
    """Poll until ``key`` has expired (no fixed sleeps)."""
    deadline = time.monotonic() + within_s
    while await client.exists(key):
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} did not expire within {within_s}s")
        pttl = await client.pttl(key)
        await asyncio.sleep(min(max(pttl, 5), 50) / 1000)


@dataclass
class Snapshot:
    """Every pairing in the store: app -> runner from session keys, runner -> apps from sets."""

    sessions: dict[str, str]
    sets: dict[str, set[str]]

    def problems(self) -> list[str]:
        out = []
        for app, runner in self.sessions.items():
            holders = sorted(r for r, apps in self.sets.items() if app in apps)
            if holders != [runner]:
                out.append(f"session {app}->{runner} but app is in the sets of {holders}")
        for runner, apps in self.sets.items():
            for app in apps:
                if self.sessions.get(app) != runner:
                    out.append(f"{app} in set of {runner} but session is {self.sessions.get(app)}")
            if not apps:
                out.append(f"empty set key for {runner}")
        return out


async def snapshot(client: Redis) -> Snapshot:
    sessions: dict[str, str] = {}
    async for raw_key in client.scan_iter(match=keys.SESSION_PREFIX + "*", count=1000):
        key = text(raw_key)
        assert key is not None
        raw = await client.get(key)
        if raw is None:
            continue
        sessions[key[len(keys.SESSION_PREFIX) :]] = json.loads(raw)["runnerId"]
    sets: dict[str, set[str]] = {}
    async for raw_key in client.scan_iter(match=keys.RUNNER_APPS_PREFIX + "*", count=1000):
        key = text(raw_key)
        assert key is not None
        members = await client.smembers(key)
        sets[key[len(keys.RUNNER_APPS_PREFIX) :]] = {str(text(m)) for m in members}
    return Snapshot(sessions, sets)


# -- MONITOR ---------------------------------------------------------------------------------

_LINE = re.compile(r"^\+(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MonitoredCommand:
    source: str  # "ip:port" of the client, or "lua" for commands run by a script
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.args[0].upper() if self.args else ""


class CommandMonitor:
    """A raw connection in MONITOR mode, counting what a client sends between two markers."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> CommandMonitor:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"MONITOR\r\n")
        await self._writer.drain()
        first = await asyncio.wait_for(self._reader.readline(), 5)
        assert first == b"+OK\r\n", first
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def _next(self) -> MonitoredCommand:
        assert self._reader is not None
        raw = await asyncio.wait_for(self._reader.readline(), 5)
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        m = _LINE.match(line)
        assert m is not None, f"unexpected MONITOR line: {line!r}"
        return MonitoredCommand(m.group(3), tuple(_ARG.findall(m.group(4))))

    async def commands(
        self, client: Redis, call: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, list[MonitoredCommand]]:
        """Run ``call``; return its result and every command clients sent meanwhile.

        ``ECHO`` markers sent by ``client`` before and after delimit the window. Commands
        executed by Lua (``[0 lua]``) are left out: they cost no round trip.
        """
        marker = uuid.uuid4().hex
        begin, end = f"round-trip-begin-{marker}", f"round-trip-end-{marker}"
        await client.echo(begin)
        result = await call()
        await client.echo(end)
        seen: list[MonitoredCommand] = []
        started = False
        while True:
            cmd = await self._next()
            if cmd.name == "ECHO" and cmd.args[1:] == (begin,):
                started = True
                continue
            if cmd.name == "ECHO" and cmd.args[1:] == (end,):
                break
            if started and cmd.source != "lua":
                seen.append(cmd)
        assert started
        return result, seen
