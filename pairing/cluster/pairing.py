"""Moving apps between runners on a Redis Cluster: pair, unpair and removeAll as steps.

An app's session key and a runner's apps set sit in different slots there, so no one script
can move an app. The steps below keep one invariant at every moment, whatever crashes or
interleaves between them (docs/architecture.md, "Pairing on a Redis Cluster"):

    an app whose session names runner R is in R's apps set.

The session key is the truth; an apps set may hold extra members (readers filter them by
the session, and removers clear them). Adding to a set always happens before the session is
written (the commit), removing only after. A remover cannot see a pair that has added the
app to the set but not yet committed; so every set member carries a token (in
``pairing:app_tokens:{R}``), a remover first *fences* the token in the app's slot
(``pairing:fence:{app}``; a commit with a fenced token is refused), then drops the member
only if its token is unchanged. A pair refused by a fence retries once with a fresh token.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from pairing import keys
from pairing.models import session_runner
from pairing.results import RedeemResult, RedeemStatus
from pairing.scripts import (
    HEARTBEAT_FRESH,
    NOW_MS,
    ONLINE,
    SESSION_JSON,
    SESSION_RUNNER,
    Script,
    as_str,
    preload,
)
from pairing.store import Redis

#: Called with a step's name before each step of a multi-step operation; tests raise from it
#: (a crash there) or wait in it (another operation runs in between).
StepHook = Callable[[str], Awaitable[None]]

#: A fence outlives any operation still in flight with the fenced token.
FENCE_TTL_MS = 300_000

#: Runner slot. KEYS: apps set, tokens, heartbeat, and (redeeming a code) the runner-code key.
#: ARGV: app, fresh token, '1' to require the runner online, heartbeat timeout ms, a token not
#: to reuse ('' none), the CODE being redeemed. Returns the app's token, false when the runner
#: is offline, or '' when the code is no longer the runner's current one (a registration that
#: replaced it stopped before dropping it); nothing is written then. A member keeps its token
#: (pairs of one app with one runner in flight together share it: one fence stops them all).
_ATTACH = (
    NOW_MS
    + HEARTBEAT_FRESH
    + """
if KEYS[4] and redis.call('GET', KEYS[4]) ~= ARGV[6] then return '' end
if ARGV[3] == '1' and not fresh_heartbeat(KEYS[3], ARGV[4]) then return false end
local app = ARGV[1]
local token = redis.call('HGET', KEYS[2], app)
if not token or token == ARGV[5] or redis.call('SISMEMBER', KEYS[1], app) == 0 then
  token = ARGV[2]
  redis.call('HSET', KEYS[2], app, token)
end
redis.call('SADD', KEYS[1], app)
return token
"""
)

#: App slot; the commit point of a pair. KEYS: session, fence. ARGV: app, runner, token.
#: Returns {'fenced'} (nothing written) or {'ok', previous runnerId or ''}.
_COMMIT = (
    NOW_MS
    + SESSION_RUNNER
    + SESSION_JSON
    + """
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return {'fenced'} end
local app, runner = ARGV[1], ARGV[2]
local previous = session_runner(redis.call('GET', KEYS[1])) or ''
redis.call('SET', KEYS[1], session_json(app, runner, now))
return {'ok', previous}
"""
)

#: App slot; the commit point of an unpair. KEYS: session. Returns the runnerId or ''.
_DELETE = (
    SESSION_RUNNER
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return '' end
redis.call('DEL', KEYS[1])
return session_runner(raw) or ''
"""
)

#: Runner slot. KEYS: apps set, tokens. ARGV: apps to look at (none: every member).
#: Returns a flat list app, token ('' when it has none), for the apps that are members.
_TOKENS = """
local apps = ARGV
if #apps == 0 then apps = redis.call('SMEMBERS', KEYS[1]) end
local out = {}
for _, app in ipairs(apps) do
  if redis.call('SISMEMBER', KEYS[1], app) == 1 then
    out[#out + 1] = app
    out[#out + 1] = redis.call('HGET', KEYS[2], app) or ''
  end
end
return out
"""

#: App slot. KEYS: session, fence. ARGV: runner, token, '1' to unpair an app paired with the
#: runner (else such an app is kept), fence ttl ms. Fences the token unless kept.
#: Returns 'kept', 'removed' (the session was deleted) or 'fenced'.
_FENCE = (
    SESSION_RUNNER
    + """
local names = session_runner(redis.call('GET', KEYS[1])) == ARGV[1]
if names and ARGV[3] ~= '1' then return 'kept' end
if names then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if names then return 'removed' end
return 'fenced'
"""
)

#: Runner slot. KEYS: apps set, tokens. ARGV: app, token, app, token, ... Drops each app whose
#: token is still the one fenced (a pair that added it again since has a fresh token).
_DROP = """
for i = 1, #ARGV, 2 do
  if (redis.call('HGET', KEYS[2], ARGV[i]) or '') == ARGV[i + 1] then
    redis.call('SREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return 1
"""

#: Code slot. KEYS: code key. ARGV: runner. Spends the code if it still names the runner.
_SPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

#: Runner slot. KEYS: runner-code key. ARGV: CODE. Forgets the runner's spent code.
_FORGET_CODE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class Fenced(Enum):
    """What ``_FENCE`` did to one member of a runner's set."""

    KEPT = "kept"  # its session names the runner and it is not unpaired: left alone
    REMOVED = "removed"  # its session named the runner and was deleted; token fenced
    FENCED = "fenced"  # its session names another runner or none; token fenced


@dataclass(frozen=True, slots=True)
class Committed:
    """A pair's outcome: ``runner_id`` None when refused (the runner was offline or left)."""

    runner_id: str | None
    previous_runner_id: str | None = None


def token_pairs(flat: list[bytes | str]) -> list[tuple[str, str]]:
    """A flat reply app, token, app, token, ... as pairs."""
    return [(as_str(flat[i]), as_str(flat[i + 1])) for i in range(0, len(flat), 2)]


class ClusterPairing:
    """The steps of pair, unpair and removeAll on a cluster, shared by the services."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        *,
        heartbeat_timeout_ms: int,
        steps: StepHook | None = None,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._steps = steps
        self._attach = Script(redis, _ATTACH)
        self._commit = Script(redis, _COMMIT)
        self._delete = Script(redis, _DELETE)
        self._tokens = Script(redis, _TOKENS)
        self._fence = Script(redis, _FENCE)
        self._drop = Script(redis, _DROP)
        self._online = Script(redis, ONLINE)
        self._spend = Script(redis, _SPEND)
        self._forget_code = Script(redis, _FORGET_CODE)

    async def load_scripts(self) -> None:
        await preload(
            self.redis,
            self._attach,
            self._commit,
            self._delete,
            self._tokens,
            self._fence,
            self._drop,
            self._online,
            self._spend,
            self._forget_code,
        )

    async def step(self, name: str) -> None:
        if self._steps is not None:
            await self._steps(name)

    def _runner_keys(self, runner_id: str) -> list[str]:
        return [self.layout.runner_apps(runner_id), self.layout.app_tokens(runner_id)]

    # -- pair --------------------------------------------------------------------------------

    async def attach(
        self, app: str, runner_id: str, *, online: bool, avoid: str = "", code: str = ""
    ) -> str | None:
        """Add the app to the runner's set (the first step of a pair); None when the runner
        is offline and ``online`` is required; '' (nothing written) when ``code`` is given and
        is not the runner's current code."""
        await self.step("attach")
        keys_ = [*self._runner_keys(runner_id), self.layout.heartbeat(runner_id)]
        if code:
            keys_.append(self.layout.runner_code(runner_id))
        token = await self._attach(
            keys_,
            [
                app,
                secrets.token_hex(8),
                "1" if online else "0",
                self.heartbeat_timeout_ms,
                avoid,
                code.upper(),
            ],
        )
        return None if token is None else as_str(token)

    async def commit(self, app: str, runner_id: str, token: str, *, online: bool) -> Committed:
        """Write the session (the commit point), then leave the previous runner's set.

        A fenced token (a remover of this runner's apps got in between) is retried once
        with a fresh one; refused again (or the runner offline by then), the pair fails.
        """
        for attempt in range(2):
            await self.step("commit")
            reply = await self._commit(
                [self.layout.session(app), self.layout.fence(app)], [app, runner_id, token]
            )
            if as_str(reply[0]) == "ok":
                previous = as_str(reply[1]) or None
                if previous is not None and previous != runner_id:
                    await self.detach(app, previous)
                return Committed(runner_id, previous)
            if attempt == 0:
                fresh = await self.attach(app, runner_id, online=online, avoid=token)
                if fresh is None:
                    return Committed(None)
                token = fresh
        return Committed(None)

    async def pair(self, app: str, runner_id: str) -> str | None:
        """Pair without checks (PairingSessionService.pair); returns the previous runner."""
        token = await self.attach(app, runner_id, online=False)
        assert token is not None  # no online check: always added
        result = await self.commit(app, runner_id, token, online=False)
        return result.previous_runner_id

    async def redeem(self, code: str, app: str) -> RedeemResult:
        """Spend ``code`` and pair the app with its runner if the runner is online.

        The code is read, the runner's heartbeat and current code checked while the app joins
        its set, and only then the code spent: an offline runner's code stays valid. A code spent by
        another app in between is INVALID (this app leaves the set again); a commit refused
        after the spend (the runner left meanwhile) is OFFLINE, the code gone with it.
        """
        layout = self.layout
        await self.step("lookup")
        raw = await self.redis.get(layout.code(code))
        if raw is None:
            return RedeemResult(RedeemStatus.INVALID_CODE)
        runner = as_str(raw)
        token = await self.attach(app, runner, online=True, code=code)
        if token == "":  # a code its runner replaced: as good as expired
            return RedeemResult(RedeemStatus.INVALID_CODE)
        if token is None:
            return RedeemResult(RedeemStatus.RUNNER_OFFLINE, runner)
        await self.step("spend")
        if not await self._spend([layout.code(code)], [runner]):
            await self.detach(app, runner)
            return RedeemResult(RedeemStatus.INVALID_CODE)
        await self.step("forget_code")
        await self._forget_code([layout.runner_code(runner)], [code.upper()])
        result = await self.commit(app, runner, token, online=True)
        if result.runner_id is None:
            return RedeemResult(RedeemStatus.RUNNER_OFFLINE, runner)
        return RedeemResult(RedeemStatus.PAIRED, runner, result.previous_runner_id)

    async def consume(self, code: str) -> str | None:
        """Spend ``code`` (code slot), then forget it as its runner's code (runner slot)."""
        layout = self.layout
        await self.step("lookup")
        raw = await self.redis.get(layout.code(code))
        if raw is None:
            return None
        runner = as_str(raw)
        await self.step("spend")
        if not await self._spend([layout.code(code)], [runner]):
            return None
        await self.step("forget_code")
        await self._forget_code([layout.runner_code(runner)], [code.upper()])
        return runner

    # -- unpair ------------------------------------------------------------------------------

    async def unpair(self, app: str) -> str | None:
        """Delete the session (the commit point), then leave the runner's set."""
        await self.step("delete")
        previous = as_str(await self._delete([self.layout.session(app)], [])) or None
        if previous is not None:
            await self.detach(app, previous)
        return previous

    async def detach(self, app: str, runner_id: str) -> None:
        """Drop the app from the runner's set unless it is (again) paired with the runner."""
        await self.step("detach:tokens")
        found = token_pairs(await self._tokens(self._runner_keys(runner_id), [app]))
        if found:
            await self.remove(runner_id, found, unpair=False)

    # -- removeAll ---------------------------------------------------------------------------

    async def members(self, runner_id: str) -> list[tuple[str, str]]:
        """Every member of the runner's set with its token."""
        await self.step("members")
        return token_pairs(await self._tokens(self._runner_keys(runner_id), []))

    async def remove(
        self, runner_id: str, members: list[tuple[str, str]], *, unpair: bool
    ) -> list[str]:
        """Fence each member's token in its app's slot (with ``unpair``, deleting a session
        that names the runner), then drop the members whose tokens are unchanged. Returns
        the apps whose session was deleted.

        The fences are one step: one script per app, each in its own slot, sent at once (an
        app's fence depends on no other's, so any of them done and not the rest is as if
        they had run one by one)."""
        if not members:
            return []
        layout = self.layout
        force = "1" if unpair else "0"
        await self.step("fence")
        outcomes = await asyncio.gather(
            *(
                self._fence(
                    [layout.session(app), layout.fence(app)],
                    [runner_id, token, force, FENCE_TTL_MS],
                )
                for app, token in members
            )
        )
        results = [(m, Fenced(as_str(o))) for m, o in zip(members, outcomes, strict=True)]
        removed = sorted(app for (app, _), outcome in results if outcome is Fenced.REMOVED)
        # A member whose session names the runner (again) is kept: only fenced ones go.
        fenced = [x for m, outcome in results if outcome is not Fenced.KEPT for x in m]
        if fenced:
            await self.step("drop")
            await self._drop(self._runner_keys(runner_id), fenced)
        return removed

    async def remove_all(self, runner_id: str) -> list[str]:
        return await self.remove(runner_id, await self.members(runner_id), unpair=True)

    # -- readers -----------------------------------------------------------------------------

    async def sessions_of(self, apps: list[str]) -> list[str | None]:
        """The runnerId each app's session names (None: unpaired): one GET per app, at once."""
        if not apps:
            return []
        await self.step("sessions")
        raws = await asyncio.gather(*(self.redis.get(self.layout.session(a)) for a in apps))
        return [session_runner(raw) for raw in raws]

    async def apps_of(self, runner_id: str) -> list[str]:
        """The apps paired with the runner: set members whose session names it. Members
        whose session does not are cleared (fenced, then dropped)."""
        members = await self.members(runner_id)
        named = await self.sessions_of([app for app, _ in members])
        paired = sorted(app for (app, _), r in zip(members, named, strict=True) if r == runner_id)
        stray = [m for m, r in zip(members, named, strict=True) if r != runner_id]
        if stray:
            await self.remove(runner_id, stray, unpair=False)
        return paired

    async def online(self, runner_id: str) -> bool:
        await self.step("heartbeat")
        return bool(
            await self._online([self.layout.heartbeat(runner_id)], [self.heartbeat_timeout_ms])
        )
