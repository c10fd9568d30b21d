"""runnerKey binding and the registration limit, over real sockets and gateway processes.

Two ``python -m gateway`` replicas share one real Redis: a registration of a bound runnerId
without its key, or with another, is refused on either replica and the real runner keeps
its socket, pairings and commands; the owner's own reconnect takes over at once; bindings
survive a restart of every replica; the operator's release command frees the id.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_settings
from pairing import keys
from pairing.store import Redis, connect
from tests.support.gateways import Client, GatewayProcess, watch_disconnect
from tests.support.paths import ROOT
from tests.support.redis_server import RedisProcess
from tests.support.replicas import Heartbeats, command_reaches, paired_online

KEY = secrets.token_urlsafe(32)  # what examples/runner.py makes: 43 chars
OTHER_KEY = secrets.token_urlsafe(32)
APP_ID = "app-keys-0123456789abcdef"

Start = Callable[..., GatewayProcess]
Connect = Callable[..., Awaitable[Client]]


async def register(client: Client, runner_id: str, key: str | None = None, **extra: Any) -> Any:
    payload: dict[str, Any] = {"runnerId": runner_id, **extra}
    if key is not None:
        payload["runnerKey"] = key
    return await client.call("runner:register", payload)


def refused(ack: Any) -> bool:
    return isinstance(ack, dict) and ack.get("error") == "UNAUTHORIZED" and "success" not in ack


async def metric(gw_url: str, name: str) -> float:
    """The value of one sample of the replica's /metrics (0 when absent)."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(gw_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_takeover_without_the_key_is_refused_on_either_replica(
    gateway_procs: Start,
    redis: Redis,
    redis_proc: RedisProcess,
    clients: Connect,
    beats: Heartbeats,
) -> None:
    gw_a, gw_b = gateway_procs(redis_proc.url), gateway_procs(redis_proc.url)
    runner_id = "alice-laptop"
    runner = await clients(gw_a.url)
    runner_gone = watch_disconnect(runner)
    ack = await register(runner, runner_id, KEY)
    assert ack["success"] is True, ack
    beats.start(runner, runner_id)
    app = await clients(gw_b.url, auth={"appSessionId": APP_ID})
    paired = await app.call("app:pair", {"pairingCode": ack["pairingCode"]})
    assert paired["success"] is True, paired
    assert await runner.next("pairing:paired") == {"appSessionId": APP_ID}
    # a fresh code for a second app, to check it stays valid through the attempts
    code = (await register(runner, runner_id, KEY))["pairingCode"]

    thief_a = await clients(gw_a.url)
    thief_b = await clients(gw_b.url)
    attempts = [
        (thief_b, None, {}),
        (thief_b, OTHER_KEY, {}),
        (thief_a, None, {"pairingCode": "THIEF-1"}),
        (thief_a, OTHER_KEY, {"pairingCode": code}),  # even proposing the live code
    ]
    for thief, key, extra in attempts:
        ack = await register(thief, runner_id, key, **extra)
        assert refused(ack), ack
        # nothing changed: the real runner still gets its app's commands
        await command_reaches(app, APP_ID, runner, f"after refused attempt {key is not None}")
        assert await app.call("app:status") == paired_online(runner_id)
    assert not runner_gone.is_set()
    assert await thief_b.call("runner:heartbeat", {"runnerId": runner_id}) == {
        "error": "NOT_REGISTERED",
        "message": "this connection has not registered that runnerId",
    }
    assert all(a == {"success": True} for a in beats.acks[runner_id]), beats.acks
    assert await redis.get(keys.code("THIEF-1")) is None
    # the code registered before the attempts still pairs a second app with the real runner
    app2 = await clients(gw_b.url, auth={"appSessionId": "app-keys-second-0123456789"})
    ack2 = await app2.call("app:pair", {"pairingCode": code})
    assert ack2["success"] is True and ack2["runnerId"] == runner_id, ack2

    # counted per replica, and written to the history stream with the client address
    for gw, reasons in ((gw_a, ("key_missing", "key_mismatch")), (gw_b, ("key_missing",))):
        for reason in reasons:
            name = f'gateway_runner_registrations_refused_total{{reason="{reason}"}}'
            assert await metric(gw.url, name) == 1.0
    entries = await redis.xrevrange(keys.HISTORY_STREAM, count=50)
    refusals = [f for _, f in entries if f.get(b"event") == b"register_refused"]
    assert len(refusals) == 4
    assert {(f[b"runnerId"], f[b"address"]) for f in refusals} == {
        (runner_id.encode(), b"127.0.0.1")
    }

    # the owner's own reconnect (new socket, other replica) with its key takes over at once
    again = await clients(gw_b.url)
    ack = await register(again, runner_id, KEY)
    assert ack["success"] is True, ack
    await asyncio.wait_for(runner_gone.wait(), 10)
    await command_reaches(app, APP_ID, again, "after the owner's reconnect")
    assert await app.call("app:status") == paired_online(runner_id)


async def test_bindings_survive_a_restart_of_every_replica(
    gateway_procs: Start, redis: Redis, redis_proc: RedisProcess, clients: Connect
) -> None:
    first = [gateway_procs(redis_proc.url), gateway_procs(redis_proc.url)]
    runner = await clients(first[0].url)
    assert (await register(runner, "r-restart", KEY))["success"] is True
    for gw in first:
        assert gw.terminate() == 0
    second = [gateway_procs(redis_proc.url), gateway_procs(redis_proc.url)]
    for gw in second:
        thief = await clients(gw.url)
        assert refused(await register(thief, "r-restart"))
        assert refused(await register(thief, "r-restart", OTHER_KEY))
    owner = await clients(second[1].url)
    assert (await register(owner, "r-restart", KEY))["success"] is True


async def test_release_command_frees_the_id_for_a_new_key(
    gateway_procs: Start,
    redis: Redis,
    redis_proc: RedisProcess,
    clients: Connect,
    beats: Heartbeats,
    tmp_path: Path,
) -> None:
    gw = gateway_procs(redis_proc.url)
    runner = await clients(gw.url)
    assert (await register(runner, "r-lost-key", KEY))["success"] is True
    beats.start(runner, "r-lost-key")  # alive, or the sweeper would forget it meanwhile
    newcomer = await clients(gw.url)
    assert refused(await register(newcomer, "r-lost-key", OTHER_KEY))

    config = tmp_path / "ops.yaml"
    config.write_text(yaml.safe_dump({"redis_url": redis_proc.url}))
    done = await _cli("runner", "release", "r-lost-key", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "released runner r-lost-key" in done.stdout
    again = await _cli("--redis-url", redis_proc.url, "runner", "release", "r-lost-key")
    assert again.returncode == 0 and "no key binding" in again.stdout, again

    runner_gone = watch_disconnect(runner)
    assert (await register(newcomer, "r-lost-key", OTHER_KEY))["success"] is True
    await asyncio.wait_for(runner_gone.wait(), 10)  # the new key's holder took over
    old_key_holder = await clients(gw.url)
    assert refused(await register(old_key_holder, "r-lost-key", KEY))  # the new key is bound


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a subprocess, without blocking the loop: the test's Socket.IO
    clients must keep answering pings (1 s in the test config) meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def test_release_command_usage_errors() -> None:
    bad_id = await _cli("runner", "release", "not a runner id", "--redis-url", "redis://x")
    assert bad_id.returncode == 2
    memory = await _cli("runner", "release", "r1", "--redis-url", "memory://")
    assert memory.returncode == 2 and "memory://" in memory.stderr
    assert (await _cli("runner")).returncode == 2
    unreachable = await _cli("runner", "release", "r1", "--redis-url", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr
    # the server's own command line still refuses stray words
    assert (await _cli("--redis-url", "memory://", "runnr")).returncode == 2


async def test_require_runner_key_refuses_keyless_registration(
    start_gateway: Any, clients: Connect
) -> None:
    gw = await start_gateway({"auth": {"require_runner_key": True}})
    client = await clients(gw.url)
    ack = await register(client, "r-required")
    assert ack == {"error": "UNAUTHORIZED", "message": "this gateway requires a runnerKey"}
    assert (await register(client, "r-required", KEY))["success"] is True


async def test_runner_secret_and_key_both_apply(start_gateway: Any, clients: Connect) -> None:
    import hashlib
    import hmac

    gw = await start_gateway({"auth": {"runner_secret": "s3cret"}})
    token = hmac.new(b"s3cret", b"r-both", hashlib.sha256).hexdigest()
    owner = await clients(gw.url)
    assert (await register(owner, "r-both", KEY, token=token))["success"] is True
    thief = await clients(gw.url)
    assert refused(await register(thief, "r-both", KEY))  # the key without the token
    wrong_key = await register(thief, "r-both", OTHER_KEY, token=token)  # a leaked secret
    assert wrong_key["message"] == "this runnerId is bound to a different runnerKey"
    assert (await register(thief, "r-both", KEY, token=token))["success"] is True


@pytest.mark.parametrize(
    "bad",
    ["a" * 21, "a" * 257, "a" * 21 + "!", "a" * 21 + " ", "é" * 22, 12345678901234567890123, None],
)
async def test_malformed_runner_keys_are_invalid_payload(
    start_gateway: Any, clients: Connect, bad: Any
) -> None:
    gw = await start_gateway()
    client = await clients(gw.url)
    ack = await client.call("runner:register", {"runnerId": "r-bad", "runnerKey": bad})
    if bad is None:  # an explicit null is "no key"
        assert ack["success"] is True
        return
    assert ack["error"] == "INVALID_PAYLOAD", ack
    good = "AZaz09_-.~+/=" + "x" * 9
    assert (await register(client, "r-bad", good))["success"] is True
    assert (await register(client, "r-bad", "y" * 256))["error"] == "UNAUTHORIZED"


async def test_registration_flood_from_one_address_is_limited_and_bounded(
    start_gateway: Any, clients: Connect, redis_proc: RedisProcess
) -> None:
    """400 registrations of distinct runnerIds from one address, on 4 sockets: the first
    rate_limit.registrations (60) succeed, every later one is RATE_LIMITED, and the store
    holds a bounded number of keys."""
    # Runners that never beat: with the suite's 1.5 s heartbeat timeout, a loaded machine's
    # 340 refused attempts outlast it and the sweeper forgets the 4 owners counted below.
    gw = await start_gateway(
        {"rate_limit": {"registrations": 60}, "heartbeat": {"timeout_s": 120, "ttl_s": 240}}
    )
    sockets = [await clients(gw.url) for _ in range(4)]
    acks = []
    for i in range(400):
        client = sockets[i % 4]
        acks.append(await register(client, f"flood-{i}", KEY if i % 3 == 0 else None))
    ok = [i for i, a in enumerate(acks) if a.get("success") is True]
    limited = [i for i, a in enumerate(acks) if a.get("error") == "RATE_LIMITED"]
    assert ok == list(range(60))
    assert limited == list(range(60, 400))
    store = connect(redis_proc.url)
    try:
        # the sweeper's lock comes and goes with its runs: not the flood's
        n_keys = len([k for k in await store.keys("*") if k != keys.SWEEPER_LOCK.encode()])
        bindings = len(await store.keys(keys.RUNNER_KEY_PREFIX + "*"))
        owners = len(await store.keys(keys.OWNER_PREFIX + "*"))
    finally:
        await store.aclose()
    # 60 codes with their runner-code keys (a released runner's code expires on its TTL),
    # 20 bindings, the 4 sockets' current runners (owner + heartbeat), last_seen, the
    # address's counter and the history stream (the sockets' switches released runners).
    assert bindings == 20 and owners == 4
    assert n_keys == 60 * 2 + 20 + 4 * 2 + 3


def test_new_settings_have_env_names_and_defaults() -> None:
    defaults = load_settings(None, env={})
    assert defaults.rate_limit.registrations == 60
    assert defaults.auth.require_runner_key is False
    assert defaults.auth.runner_key_ttl_s == 2_592_000
    s = load_settings(
        None,
        env={
            "PAIRING_RATE_LIMIT_REGISTRATIONS": "7",
            "PAIRING_AUTH_REQUIRE_RUNNER_KEY": "true",
            "PAIRING_AUTH_RUNNER_KEY_TTL_S": "60",
        },
    )
    assert (s.rate_limit.registrations, s.auth.require_runner_key) == (7, True)
    assert s.auth.runner_key_ttl_s == 60
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert raw["rate_limit"]["registrations"] == 60
    assert raw["auth"]["require_runner_key"] is False
    assert raw["auth"]["runner_key_ttl_s"] == 2592000
