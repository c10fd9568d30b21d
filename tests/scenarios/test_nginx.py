"""nginx (deploy/nginx.conf) in front of two gateway replicas sharing one Redis, driven by the
official JavaScript client.

How the runner and the app are put on different replicas: the shipped config balances with
``ip_hash`` on the client address, as production does, so the test gives its clients
different addresses, like a runner at home and a phone on a mobile network. Loopback is all
of 127.0.0.0/8, so the JavaScript client binds its connections to 127.0.K.1 (ip_hash keys
on the first three octets); a probe through nginx finds one such address per replica,
reading nginx's access log for the upstream each probe went to. The test then checks the
landing on both sides (nginx's ``$upstream_addr`` per Engine.IO session and the replicas'
own event counters) rather than trusting the hash.

What this proves: long-polling with upgrade works through nginx (every request of an
Engine.IO session goes to one replica, the websocket upgrade passes the proxy), the pairing
scenario works with the runner and the app on different replicas, an app resumes on the
other replica, and X-Forwarded-For reaches the gateway's rate limiter. The same config
without ``ip_hash`` breaks long-polling, so the stickiness is what makes it work.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.config import load_settings
from pairing.store import Redis, connect
from tests.support.gateways import GatewayProcess
from tests.support.js import TRANSPORTS, check_scenario, node_deps, run_scenario
from tests.support.nginx import DEPLOY_CONF, NGINX_PEER, NginxProcess, nginx_binary
from tests.support.paths import ROOT
from tests.support.redis_server import RedisProcess

__all__ = ["node_deps"]  # the session fixture, imported so that pytest finds it here

LOG_LINE = re.compile(
    r'^(?P<remote>\S+) \[[^\]]+\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d+) \d+ '
    r"upstream=(?P<upstream>\S+)"
)


@dataclass
class NginxReplicas:
    a: GatewayProcess
    b: GatewayProcess
    nginx: NginxProcess
    redis: Redis

    def replica(self, upstream: str) -> str:
        return {f"127.0.0.1:{self.a.port}": "a", f"127.0.0.1:{self.b.port}": "b"}[upstream]


#: The replicas' operator token (the console's routes are in the shipped config too).
CONSOLE_TOKEN = "nginx-console-token-0123456789abcdef"


@pytest.fixture
async def nginx_replicas(redis_proc: RedisProcess) -> AsyncIterator[NginxReplicas]:
    nginx_binary()  # fail early, clearly, when nginx is missing
    redis = connect(redis_proc.url)
    await redis.flushdb()
    # The replicas believe X-Forwarded-For from nginx (which reaches them from NGINX_PEER).
    config = {"trusted_proxies": [NGINX_PEER], "console": {"token": CONSOLE_TOKEN}}
    a = GatewayProcess(redis_proc.url, config)
    b = GatewayProcess(redis_proc.url, config)
    started: list[Any] = []
    try:
        for proc in (a, b):
            proc.start()
            started.append(proc)
        nginx = NginxProcess([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        nginx.start()
        started.append(nginx)
        yield NginxReplicas(a, b, nginx, redis)
    finally:
        for proc in reversed(started):
            if isinstance(proc, NginxProcess):
                proc.stop()
            else:
                proc.terminate()
        await redis.aclose()


@dataclass
class Entry:
    remote: str
    method: str
    uri: str
    status: int
    upstream: str

    def query(self, key: str) -> str | None:
        m = re.search(rf"[?&]{key}=([^&]+)", self.uri)
        return m.group(1) if m else None


def entries(nginx: NginxProcess) -> list[Entry]:
    out = []
    for line in nginx.log_lines():
        m = LOG_LINE.match(line)
        if m:
            out.append(Entry(m["remote"], m["method"], m["uri"], int(m["status"]), m["upstream"]))
    return out


async def await_log(
    nginx: NginxProcess, predicate: Any, count: int = 1, timeout: float = 10
) -> list[Entry]:
    """nginx writes a line when a request ends (a websocket: when it closes): poll for
    ``count`` matching lines, or return what there is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in entries(nginx) if predicate(e)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def addresses_per_replica(nginx_replicas: NginxReplicas) -> dict[str, str]:
    """One client address (127.0.K.1) that nginx's ip_hash sends to each replica."""
    found: dict[str, str] = {}
    for k in range(1, 40):
        address = f"127.0.{k}.1"
        connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{nginx_replicas.nginx.url}/healthz?probe={k}") as resp,
        ):
            assert resp.status == 200, await resp.text()
        [entry] = await await_log(nginx_replicas.nginx, lambda e, k=k: e.query("probe") == str(k))
        assert entry.remote == address, "the probe did not come from its bound address"
        found.setdefault(nginx_replicas.replica(entry.upstream), address)
        if len(found) == 2:
            return found
    raise AssertionError(f"ip_hash sent 39 client addresses to one replica: {found}")


async def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    """The sum of a counter's series that carry ``labels`` (other labels: any value)."""
    async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sessions_by_sid(log: list[Entry]) -> dict[str, list[Entry]]:
    by_sid: dict[str, list[Entry]] = defaultdict(list)
    for e in log:
        sid = e.query("sid")
        if e.uri.startswith("/socket.io/") and sid:
            by_sid[sid].append(e)
    return by_sid


@pytest.mark.parametrize(
    ("mode", "resume_on"),
    [("polling+upgrade", "runner's replica"), ("websocket", "app's replica")],
)
async def test_official_client_through_nginx_across_replicas(
    mode: str, resume_on: str, nginx_replicas: NginxReplicas, node_deps: str
) -> None:
    addr = await addresses_per_replica(nginx_replicas)
    runner_addr, app_addr = addr["a"], addr["b"]
    resume_addr = runner_addr if resume_on == "runner's replica" else app_addr
    transport = TRANSPORTS[mode]
    runner_id = f"lb-runner-{secrets.token_hex(4)}"
    app_id = f"lb-app-{secrets.token_hex(8)}"
    steps = await run_scenario(
        node_deps,
        {
            "runnerUrl": nginx_replicas.nginx.url,
            "appUrl": nginx_replicas.nginx.url,
            "transports": transport["transports"],
            "runnerId": runner_id,
            "appSessionId": app_id,
            "runnerLocalAddress": runner_addr,
            "appLocalAddress": app_addr,
            "resumeLocalAddress": resume_addr,
        },
    )
    check_scenario(steps, runner_id=runner_id, app_id=app_id, transport=transport)

    # nginx's view: each client reached the replica its address hashes to, the websocket
    # upgrade passed (101), and no request was refused (a request of a polling session
    # that reached the wrong replica would get 400 "Unknown session id"). A websocket
    # request is logged when it closes, so wait for all three.
    replica_of = {runner_addr: "a", app_addr: "b"}
    ws = await await_log(
        nginx_replicas.nginx, lambda e: e.query("transport") == "websocket", count=3
    )
    assert len(ws) == 3 and {e.status for e in ws} == {101}, ws
    log = [e for e in entries(nginx_replicas.nginx) if e.uri.startswith("/socket.io/")]
    assert all(e.status in (101, 200) for e in log), log
    for e in log:
        assert nginx_replicas.replica(e.upstream) == replica_of[e.remote], e
    if mode == "polling+upgrade":
        # Long-polling first, then the upgrade, all of one session on one replica.
        by_sid = sessions_by_sid(log)
        for who, address in (
            ("runner_connected", runner_addr),
            ("app_connected", app_addr),
            ("resumed_connected", resume_addr),
        ):
            mine = by_sid[steps[who]["engineId"]]
            kinds = [e.query("transport") for e in mine]
            assert kinds.count("polling") >= 2 and kinds.count("websocket") == 1, (who, mine)
            assert {(e.upstream, e.remote) for e in mine} == {(mine[0].upstream, address)}
    else:
        assert sorted(e.remote for e in ws) == sorted([runner_addr, app_addr, resume_addr])

    # The replicas agree: the runner registered on a, the app paired on b, and each side's
    # traffic to the other crossed Redis.
    a, b = nginx_replicas.a, nginx_replicas.b
    assert await metric(a, "gateway_events_total", event="runner:register") == 2
    assert await metric(b, "gateway_events_total", event="runner:register") == 0
    assert await metric(b, "gateway_events_total", event="app:pair") == 3
    assert await metric(a, "gateway_events_total", event="app:pair") == 0
    assert await metric(a, "gateway_fanout_messages_total", path="published") > 0
    assert await metric(b, "gateway_fanout_messages_total", path="published") > 0

    # X-Forwarded-For went through nginx: the failed pairing counted against the app's own
    # address, not against nginx's.
    assert await nginx_replicas.redis.exists(f"ratelimit:pair:addr:{app_addr}") == 1
    assert await nginx_replicas.redis.exists(f"ratelimit:pair:addr:{NGINX_PEER}") == 0


async def test_without_sticky_sessions_long_polling_breaks(
    redis_proc: RedisProcess, node_deps: str
) -> None:
    """The negative control: deploy/nginx.conf minus ip_hash (round robin) cannot carry one
    long-polling session, so the stickiness above is what makes polling work."""
    nginx_binary()
    a, b = GatewayProcess(redis_proc.url), GatewayProcess(redis_proc.url)
    nginx = NginxProcess([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], sticky=False)
    try:
        a.start()
        b.start()
        nginx.start()
        steps = await run_scenario(
            node_deps,
            {
                "runnerUrl": nginx.url,
                "appUrl": nginx.url,
                "transports": ["polling"],
                "upgrade": False,
                "runnerId": "unsticky-runner",
                "appSessionId": f"unsticky-app-{secrets.token_hex(8)}",
                "timeoutMs": 3000,
            },
            expect_error=True,
        )
        assert steps["error"]["at"] == "runner_connected", steps
        refused = [e for e in entries(nginx) if e.status == 400 and e.query("sid")]
        assert refused, entries(nginx)
    finally:
        nginx.stop()
        b.terminate()
        a.terminate()


def test_shipped_timeouts_outlast_the_ping_cycle() -> None:
    """proxy_read/send_timeout in deploy/nginx.conf exceed the default ping interval plus
    ping timeout of config.yaml, or nginx would cut idle healthy connections."""
    settings = load_settings(ROOT / "config.yaml", env={})
    cycle = settings.socketio.ping_interval_s + settings.socketio.ping_timeout_s
    text = DEPLOY_CONF.read_text()
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        [value] = re.findall(rf"^\s*{directive} (\d+)s;", text, flags=re.M)
        assert int(value) > cycle, (directive, value, cycle)
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert "proxy_http_version 1.1;" in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert re.search(r"upstream pairing_gateway \{[^}]*^\s*ip_hash;", text, flags=re.M | re.S)


async def test_browser_pages_and_console_through_nginx(nginx_replicas: NginxReplicas) -> None:
    """The shipped config passes the terminal page, its bundles, the icon and the console;
    the console's wrong-token limit counts the client's address, not nginx's."""

    async def get(path: str, local: str = "127.0.0.1", token: str | None = None) -> Any:
        connector = aiohttp.TCPConnector(local_addr=(local, 0), force_close=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(nginx_replicas.nginx.url + path, headers=headers) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()

    status, headers, body = await get("/")
    assert status == 200 and b"Pairing code" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    bundles = re.findall(rb'(?:src|href)="(/assets/[^"]+)"', body)
    assert bundles
    for path in [*(b.decode() for b in bundles), "/favicon.ico", "/console"]:
        assert (await get(path))[0] == 200, path
    assert (await get("/console/api/runners"))[0] == 401
    for _ in range(10):
        assert (await get("/console/api/runners", "127.0.3.1", "wrong"))[0] == 401
    assert (await get("/console/api/runners", "127.0.3.1", CONSOLE_TOKEN))[0] == 429
    assert (await get("/console/api/runners", "127.0.4.1", CONSOLE_TOKEN))[0] == 200
    assert (await get("/metrics"))[0] == 404  # still not exposed
