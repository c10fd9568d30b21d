"""Helpers for the pairing core on the cluster key layout: services, raw state, invariants.

A ``Replica`` is one gateway replica's services sharing one client; ``steps`` (the services'
step hook) lets a test pause or abort an operation between two of its single-slot steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pairing import (
    AppPairingService,
    PairingCodeService,
    PairingHistoryService,
    PairingSessionService,
    RateLimitService,
    RunnerRegistry,
    keys,
)
from pairing.cluster.pairing import StepHook
from pairing.models import decode_session
from pairing.relay import Recipient, RelayService
from pairing.store import Redis
from tests.support.store_state import text

LAYOUT = keys.CLUSTER


@dataclass
class Replica:
    sessions: PairingSessionService
    registry: RunnerRegistry
    codes: PairingCodeService
    pairing: AppPairingService
    history: PairingHistoryService


def replica(client: Redis, steps: StepHook | None = None) -> Replica:
    history = PairingHistoryService(client, layout=LAYOUT)
    codes = PairingCodeService(client, layout=LAYOUT, steps=steps)
    return Replica(
        sessions=PairingSessionService(client, layout=LAYOUT, steps=steps),
        registry=RunnerRegistry(client, layout=LAYOUT, steps=steps),
        codes=codes,
        pairing=AppPairingService(
            client,
            codes=codes,
            rate_limit=RateLimitService(client, layout=LAYOUT),
            history=history,
            layout=LAYOUT,
            steps=steps,
        ),
        history=history,
    )


def now_ms() -> int:
    """Every test node runs on this machine: its clock is the servers' clock."""
    return int(time.time() * 1000)


async def beat(client: Redis, runner: str, *, age_ms: int = 0) -> None:
    """Register ``runner`` as connection ``conn-<runner>`` with a heartbeat ``age_ms`` old."""
    at = now_ms() - age_ms
    await client.set(LAYOUT.owner(runner), f"conn-{runner}")
    await client.set(LAYOUT.heartbeat(runner), str(at), px=120_000)
    await client.zadd(LAYOUT.last_seen(runner), {runner: at})


async def give_code(client: Redis, runner: str, code: str) -> None:
    await client.set(LAYOUT.code(code), runner, px=300_000)
    await client.set(LAYOUT.runner_code(runner), code.upper(), px=300_000)


def _tag(key: str) -> str:
    return key[key.index("{") + 1 : key.rindex("}")]


async def _scan(client: Redis, prefix: str) -> list[str]:
    return [str(text(k)) for k in [k async for k in client.scan_iter(match=prefix + "*")]]


@dataclass
class State:
    """Every pairing reference in the store, read key by key."""

    sessions: dict[str, str] = field(default_factory=dict)
    sets: dict[str, set[str]] = field(default_factory=dict)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    owners: set[str] = field(default_factory=set)
    heartbeats: set[str] = field(default_factory=set)
    indexed: set[str] = field(default_factory=set)

    def broken(self) -> list[str]:
        """What must never be seen, at any moment: a session whose runner's set lacks the
        app (the fan-out would miss it), or a set member without its token."""
        out = []
        for app, runner in sorted(self.sessions.items()):
            if app not in self.sets.get(runner, set()):
                out.append(f"session {app}->{runner}, not in the set {self.sets.get(runner)}")
        for runner in set(self.sets) | set(self.tokens):
            members, tokens = self.sets.get(runner, set()), self.tokens.get(runner, set())
            if members != tokens:
                out.append(f"{runner}: set {members} tokens {tokens}")
        return out

    def paired_with(self, runner: str) -> list[str]:
        return sorted(a for a, r in self.sessions.items() if r == runner)

    def references(self) -> list[str]:
        """Anything that still names a runner or an app's pairing (fences excepted: they
        name no runner and expire)."""
        out = [f"session {a}->{r}" for a, r in self.sessions.items()]
        out += [f"set {r}: {sorted(m)}" for r, m in self.sets.items()]
        out += [f"tokens {r}" for r in self.tokens]
        out += [f"owner {r}" for r in self.owners] + [f"heartbeat {r}" for r in self.heartbeats]
        out += [f"indexed {r}" for r in self.indexed]
        return out


async def read_state(client: Redis) -> State:
    state = State()
    for key in await _scan(client, keys.SESSION_PREFIX):
        raw = await client.get(key)
        if raw is not None:
            state.sessions[_tag(key)] = decode_session(raw).runner_id
    for key in await _scan(client, keys.RUNNER_APPS_PREFIX):
        state.sets[_tag(key)] = {str(text(m)) for m in await client.smembers(key)}
    for key in await _scan(client, keys.APP_TOKENS_PREFIX):
        state.tokens[_tag(key)] = {str(text(m)) for m in await client.hkeys(key)}
    state.owners = {_tag(k) for k in await _scan(client, keys.OWNER_PREFIX)}
    state.heartbeats = {_tag(k) for k in await _scan(client, keys.HEARTBEAT_PREFIX)}
    for shard in LAYOUT.last_seen_shards():
        state.indexed |= {str(text(m)) for m in await client.zrange(shard, 0, -1)}
    return state


async def relay_reaches(client: Redis, runner: str) -> list[str]:
    """The apps a ``runner:output`` of ``runner`` is held and delivered for (seq > 0), the
    recipients found the way a replica finds them (the set, then the script per app)."""
    relay = RelayService(client, layout=LAYOUT)
    first = await relay.output(runner, None, [], b"probe")
    if first.seqs is not None:
        return []
    recipients = [Recipient(app, None, b"") for app in first.members]
    result = await relay.output(runner, None, recipients, b"probe")
    assert result.seqs is not None, result
    return sorted(r.app_session_id for r, seq in zip(recipients, result.seqs, strict=True) if seq)


async def observable_problems(client: Redis, runners: list[str], apps: list[str]) -> list[str]:
    """What a client could see wrong: the readers (a replica without step hooks) disagree
    with the session keys, or the store breaks the invariant."""
    state = await read_state(client)
    out = state.broken()
    for runner in runners:
        reached = await relay_reaches(client, runner)
        if reached != state.paired_with(runner):
            expected = state.paired_with(runner)
            out.append(f"output of {runner} reaches {reached}, sessions {expected}")
    reader = replica(client)
    for app in apps:
        status = await reader.sessions.get_session_status(app)
        seen = None if status.session is None else status.session.runner_id
        if seen != state.sessions.get(app):
            out.append(f"status of {app}: {seen}, session key {state.sessions.get(app)}")
    for runner in runners:
        listed = await reader.sessions.get_apps_by_runner_id(runner)
        if listed != state.paired_with(runner):
            out.append(f"apps of {runner}: {listed}, sessions {state.paired_with(runner)}")
    # The readers cleared stray members: now the sets are exactly the sessions.
    after = await read_state(client)
    for runner in runners:
        if sorted(after.sets.get(runner, set())) != after.paired_with(runner):
            out.append(f"set of {runner} after a read: {after.sets.get(runner)}")
    return out + after.broken()


async def sweep_all(client: Redis, runners: list[str]) -> list[str]:
    """Every runner's heartbeat goes stale, a sweep runs: returns the references left."""
    for runner in runners:
        await client.delete(LAYOUT.heartbeat(runner))
        await client.zadd(LAYOUT.last_seen(runner), {runner: now_ms() - 3_600_000})
    sweeper = replica(client)
    while await sweeper.registry.sweep(limit=100):
        pass
    return (await read_state(client)).references()
