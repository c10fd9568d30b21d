"""RelayService: seq numbers and the resume hold of relayed terminal traffic.

Every ``terminal:output`` to an app and ``terminal:input`` to a runner gets a seq, per
appSessionId and direction, from a counter in Redis (so it survives reconnects, replicas and
re-pairing), and the newest messages of each stream are held (``resume.max_messages`` within
``resume.max_bytes``, kept ``resume.ttl_s`` after the last one) so that a client that lost its
connection can ask for what it missed. One script per relayed message checks the pairing,
takes the seq, appends to the hold and trims it, and publishes to the recipient's replica
when the recipient is elsewhere: one Redis round trip, as relaying without a hold was.

The caller says which recipients it expects (what it learnt the previous time) and which of
them it will deliver itself; the script relays only when that expectation is still true, and
otherwise answers with the truth so the caller can try again. That keeps the decision "publish
or deliver here" atomic with the pairing it depends on.

On a cluster, where a runner's app set, each app's keys and each room channel sit in
different slots, an operation is a few single-slot steps instead (``pairing.cluster.relay``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pairing import keys
from pairing.cluster.relay import ClusterRelay
from pairing.envelope import PUBLISH_ENVELOPE
from pairing.scripts import HEARTBEAT_FRESH, NOW_MS, SESSION_RUNNER, Script, as_str, preload
from pairing.store import Redis
from pairing.streams import (
    HOLD_APPEND,
    IN,
    OUT,
    Held,
    InputResult,
    InputStatus,
    OutputResult,
    Recipient,
    ResumeKeys,
)

__all__ = [
    "IN",
    "OUT",
    "Held",
    "InputResult",
    "InputStatus",
    "OneRedisRelay",
    "OutputResult",
    "Recipient",
    "RelayBackend",
    "RelayService",
]

#: runner:output. KEYS[1]: the runner's app set; then seq, hold, bytes keys of each expected
#: app. ARGV: target app ('' = all), number expected, held blob, then per expected app: app,
#: channel to publish to ('' = delivered by the caller), prefix. The limits are constants of
#: the script (``_limits_header``). Returns {1, seq...} (in expected order) or
#: {0, actual app...} when the expectation is wrong.
_OUTPUT = (
    PUBLISH_ENVELOPE
    + HOLD_APPEND
    + """
local target = ARGV[1]
local members
if target ~= '' then
  if redis.call('SISMEMBER', KEYS[1], target) == 1 then members = {target} else members = {} end
else
  members = redis.call('SMEMBERS', KEYS[1])
end
local n = tonumber(ARGV[2])
local same = n == #members
if same then
  local want = {}
  for i = 1, n do want[ARGV[1 + 3 * i]] = true end
  for _, m in ipairs(members) do
    if not want[m] then same = false break end
  end
end
if not same then
  local out = {0}
  for _, m in ipairs(members) do out[#out + 1] = m end
  return out
end
local blob = ARGV[3]
local out = {1}
for i = 1, n do
  local a, k = 1 + 3 * i, 3 * i - 1
  local seq = relay(KEYS[k], KEYS[k + 1], KEYS[k + 2], blob, MAX_MSGS, MAX_BYTES, TTL, SEQ_TTL)
  if ARGV[a + 1] ~= '' then
    redis.call('PUBLISH', ARGV[a + 1], envelope(ARGV[a + 2], blob, seq))
  end
  out[#out + 1] = seq
end
return out
"""
)

#: app:command. KEYS: the app's session, then its "in" seq, hold, bytes, then the expected
#: runner's heartbeat. ARGV: expected runner ('' = unknown), channel to publish to ('' =
#: delivered by the caller), prefix, blob; limits and heartbeat timeout as constants.
#: Returns {0} not paired, {2, runner} other runner than expected (its heartbeat unread: the
#: caller asks again, naming it), {1} runner offline, {3, seq} relayed.
_INPUT = (
    NOW_MS
    + SESSION_RUNNER
    + HEARTBEAT_FRESH
    + PUBLISH_ENVELOPE
    + HOLD_APPEND
    + """
local runner = session_runner(redis.call('GET', KEYS[1]))
if not runner then return {0} end
if runner ~= ARGV[1] then return {2, runner} end
if not fresh_heartbeat(KEYS[5], HB_TIMEOUT) then return {1} end
local blob = ARGV[4]
local seq = relay(KEYS[2], KEYS[3], KEYS[4], blob, MAX_MSGS, MAX_BYTES, TTL, SEQ_TTL)
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], envelope(ARGV[3], blob, seq))
end
return {3, seq}
"""
)

#: Held messages after a seq. KEYS: seq, hold, and (runner resume) the app's session.
#: ARGV: after, runner that must be paired ('' = no check).
#: Returns {-1} when not paired with that runner, else {seq, first held seq, {blob...}}.
_READ = (
    SESSION_RUNNER
    + """
if ARGV[2] ~= '' then
  if session_runner(redis.call('GET', KEYS[3])) ~= ARGV[2] then return {-1} end
end
local seq = tonumber(redis.call('GET', KEYS[1])) or 0
local len = redis.call('LLEN', KEYS[2])
local first = seq - len + 1
local after = tonumber(ARGV[1])
if after >= seq then return {seq, first, {}} end
local start = after + 1 - first
if start < 0 then start = 0 end
return {seq, first, redis.call('LRANGE', KEYS[2], start, -1)}
"""
)


def _limits_header(
    max_messages: int, max_bytes: int, ttl_ms: int, seq_ttl_ms: int, hb_ms: int
) -> str:
    """A service's limits as constants of its scripts: arguments cost Redis (and the packing
    here) on every message, and they never change for one service."""
    return (
        f"local MAX_MSGS, MAX_BYTES, TTL, SEQ_TTL = {max_messages}, {max_bytes}, {ttl_ms}, "
        f"{seq_ttl_ms}\nlocal HB_TIMEOUT = {hb_ms}\n"
    )


class RelayBackend(Protocol):
    """What differs between one Redis and a cluster; ``ClusterRelay`` is the other."""

    async def load_scripts(self) -> None: ...
    async def output(
        self,
        runner_id: str,
        target: str | None,
        recipients: Sequence[Recipient],
        blob: bytes,
        *,
        members_known: bool = False,
    ) -> OutputResult: ...
    async def input(
        self,
        app: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult: ...


class OneRedisRelay:
    """One script per relayed message, its limits constants of the script."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        resume_keys: ResumeKeys,
        *,
        limits: list[int],
        heartbeat_timeout_ms: int,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self._resume_keys = resume_keys.of
        max_messages, max_bytes, ttl_ms, seq_ttl_ms = limits
        header = _limits_header(max_messages, max_bytes, ttl_ms, seq_ttl_ms, heartbeat_timeout_ms)
        self._output = Script(redis, header + _OUTPUT)
        self._input = Script(redis, header + _INPUT)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._output, self._input)

    async def output(
        self,
        runner_id: str,
        target: str | None,
        recipients: Sequence[Recipient],
        blob: bytes,
        *,
        members_known: bool = False,
    ) -> OutputResult:
        # (the script checks the set whatever the caller knows: it costs no round trip here)
        keys_: list[str] = [self.layout.runner_apps(runner_id)]
        args: list[str | bytes | int] = [target or "", len(recipients), blob]
        for r in recipients:
            keys_ += self._resume_keys(r.app_session_id, OUT)
            args += [r.app_session_id, r.channel or "", r.prefix]
        reply = await self._output(keys_, args)
        if int(reply[0]) == 1:
            return OutputResult([int(s) for s in reply[1:]], [])
        return OutputResult(None, sorted(as_str(m) for m in reply[1:]))

    async def input(
        self,
        app: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult:
        reply = await self._input(
            [
                self.layout.session(app),
                *self._resume_keys(app, IN),
                self.layout.heartbeat(expected_runner or ""),
            ],
            [expected_runner or "", channel or "", prefix, blob],
        )
        status = InputStatus(int(reply[0]))
        if status is InputStatus.OTHER_RUNNER:
            return InputResult(status, as_str(reply[1]))
        if status is InputStatus.RELAYED:
            return InputResult(status, expected_runner, int(reply[1]))
        return InputResult(status)


class RelayService:
    """Seq counters and holds per appSessionId and direction; one round trip per call on one
    Redis, a few single-slot steps on a cluster."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_messages: int = 1000,
        max_bytes: int = 1_048_576,
        ttl_s: float = 120.0,
        seq_ttl_s: float = 604_800.0,
        heartbeat_timeout_s: float = 30.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.ttl_ms = int(ttl_s * 1000)
        # The counter outlives the hold: a stream that went quiet continues its numbering.
        self.seq_ttl_ms = max(int(seq_ttl_s * 1000), self.ttl_ms)
        self.heartbeat_timeout_ms = int(heartbeat_timeout_s * 1000)
        limits = [self.max_messages, self.max_bytes, self.ttl_ms, self.seq_ttl_ms]
        self._keys = ResumeKeys(layout)
        self.backend: RelayBackend
        if layout.cluster:
            # (the clock times how long a runner's heartbeat is known to stay fresh)
            self.backend = ClusterRelay(
                redis,
                layout,
                self._keys,
                limits=limits,
                heartbeat_timeout_ms=self.heartbeat_timeout_ms,
                clock=clock,
            )
        else:
            self.backend = OneRedisRelay(
                redis,
                layout,
                self._keys,
                limits=limits,
                heartbeat_timeout_ms=self.heartbeat_timeout_ms,
            )
        self._read = Script(redis, _READ)

    async def load_scripts(self) -> None:
        await self.backend.load_scripts()
        await preload(self.redis, self._read)

    async def output(
        self,
        runner_id: str,
        target: str | None,
        recipients: Sequence[Recipient],
        blob: bytes,
        *,
        members_known: bool = False,
    ) -> OutputResult:
        """Relay one runner:output to ``recipients`` if they are exactly the paired apps
        (or, with ``target``, the target if it is paired).

        On a cluster a recipient whose session no longer points at the runner (unpaired
        between the two steps) gets seq 0: nothing was held or published for it. With
        ``members_known`` (the caller keeps its recipients current by other means) a cluster
        skips reading the runner's app set: each recipient's own step still checks that its
        session names the runner, so only an app paired since the caller last looked can be
        missed, never a wrong one reached. One Redis checks the set in the same script
        either way."""
        return await self.backend.output(
            runner_id, target, recipients, blob, members_known=members_known
        )

    async def input(
        self,
        app_session_id: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult:
        """Relay one app:command if the app is paired with ``expected_runner``, online."""
        return await self.backend.input(app_session_id, expected_runner, channel, prefix, blob)

    async def held(
        self, app_session_id: str, direction: str, after: int, *, paired_with: str | None = None
    ) -> Held | None:
        """Held messages of a stream with seq > ``after``; None when ``paired_with`` is given
        and the app is not paired with that runner (one slot in either layout: the app's)."""
        reply = await self._read(
            [
                *self._keys.of(app_session_id, direction)[:2],
                self.layout.session(app_session_id),
            ],
            [after, paired_with or ""],
        )
        if int(reply[0]) == -1:
            return None
        return Held(int(reply[0]), int(reply[1]), [bytes(m) for m in reply[2]])
