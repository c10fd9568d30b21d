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

In the cluster layout (``keys.ClusterKeyLayout``) a runner's app set, each app's keys and
each room channel sit in different slots, so an operation is a few single-slot steps instead
of one script (docs/round-trips.md, docs/architecture.md): output checks the runner's app set
(runner slot), then runs one script per app on the app's slot (session still pointing at the
runner, seq, hold, and ``SPUBLISH`` to the app's room channel, which shares the app's tag);
input checks the runner's heartbeat (runner slot), then the app's session, seq and hold (app
slot), then ``SPUBLISH``es to the runner's room channel (runner slot). Each step on its own
is atomic; the order is such that nothing is held or published that the single script would
have refused.

Held messages are opaque bytes to this module (the gateway stores msgpack of the message
without its seq: the seq of an entry is implied by its position).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgspec

from pairing import keys
from pairing.envelope import PUBLISH_ENVELOPE, published
from pairing.scripts import NOW_MS, SESSION_RUNNER, Script, as_str, preload
from pairing.store import Redis

#: Apps whose key names a service keeps at hand, per direction (then it starts over).
_KEY_CACHE_SIZE = 4096

OUT = "out"  # terminal:output, runner -> app
IN = "in"  # terminal:input, app -> runner

#: Lua: one message appended to a stream: seq INCR, hold append and trim by count and bytes,
#: TTLs. Returns the message's seq. A script that also publishes the message wraps it with
#: ``envelope(prefix, blob, seq)`` (``pairing.envelope.PUBLISH_ENVELOPE``).
_RELAY_FUNCTIONS = """
local function relay(seq_key, hold_key, bytes_key, blob, max_msgs, max_bytes, ttl, seq_ttl)
  local seq = redis.call('INCR', seq_key)
  if max_msgs <= 0 then
    redis.call('PEXPIRE', seq_key, seq_ttl)
    return seq
  end
  -- The counter and the byte count are kept for seq_ttl + 64 * ttl, renewed with every
  -- 64th message and whenever the hold starts anew: between two renewals at most 63
  -- messages came, each within ttl of the one before (else the hold had expired), so
  -- both outlive the hold and the counter outlives the last message by seq_ttl.
  local keep = seq_ttl + 64 * ttl
  if seq == 1 then redis.call('DEL', hold_key) end
  local len = redis.call('RPUSH', hold_key, blob)
  local bytes = #blob
  local renew = seq % 64 == 0
  if len == 1 then
    redis.call('SET', bytes_key, bytes, 'PX', keep)
    renew = true
  else
    bytes = redis.call('INCRBY', bytes_key, bytes)
    if bytes == #blob then
      -- No count beside held messages (its key was lost, or written with the hold's TTL by
      -- an older version): count the hold.
      bytes = 0
      for _, held in ipairs(redis.call('LRANGE', hold_key, 0, -1)) do bytes = bytes + #held end
      redis.call('SET', bytes_key, bytes, 'PX', keep)
    elseif renew then
      redis.call('PEXPIRE', bytes_key, keep)
    end
  end
  if renew then redis.call('PEXPIRE', seq_key, keep) end
  local trimmed = false
  while len > max_msgs or (len > 0 and bytes > max_bytes) do
    local old = redis.call('LPOP', hold_key)
    bytes = bytes - #old
    len = len - 1
    trimmed = true
  end
  if len > 0 then
    redis.call('PEXPIRE', hold_key, ttl)
    if trimmed then redis.call('SET', bytes_key, bytes, 'KEEPTTL') end
  else
    redis.call('DEL', bytes_key)
  end
  return seq
end
"""

#: runner:output. KEYS[1]: the runner's app set; then seq, hold, bytes keys of each expected
#: app. ARGV: target app ('' = all), number expected, held blob, then per expected app: app,
#: channel to publish to ('' = delivered by the caller), prefix. The limits are constants of
#: the script (``_limits_header``). Returns {1, seq...} (in expected order) or
#: {0, actual app...} when the expectation is wrong.
_OUTPUT = (
    PUBLISH_ENVELOPE
    + _RELAY_FUNCTIONS
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
    + PUBLISH_ENVELOPE
    + _RELAY_FUNCTIONS
    + """
local runner = session_runner(redis.call('GET', KEYS[1]))
if not runner then return {0} end
if runner ~= ARGV[1] then return {2, runner} end
local hb = tonumber(redis.call('GET', KEYS[5]))
if not hb or now - hb > HB_TIMEOUT then return {1} end
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


#: Cluster output, one app (its slot). KEYS: the app's session, its "out" seq, hold, bytes.
#: ARGV: runner, blob, max messages, max bytes, hold ttl ms, seq ttl ms, publish ('1'/'0'),
#: channel (the app's room, same slot), prefix. Returns the seq, or 0 (nothing written)
#: when the session no longer points at the runner (an app set entry a crash or a racing
#: unpair left behind).
_OUTPUT_ONE = (
    SESSION_RUNNER
    + PUBLISH_ENVELOPE
    + _RELAY_FUNCTIONS
    + """
if session_runner(redis.call('GET', KEYS[1])) ~= ARGV[1] then return 0 end
local blob = ARGV[2]
local seq = relay(KEYS[2], KEYS[3], KEYS[4], blob, tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]))
if ARGV[7] == '1' then
  redis.call('SPUBLISH', ARGV[8], envelope(ARGV[9], blob, seq))
end
return seq
"""
)

#: Cluster: is the runner's heartbeat fresh? KEYS: heartbeat. ARGV: timeout ms. Returns 1/0.
_FRESH = (
    NOW_MS
    + """
local hb = tonumber(redis.call('GET', KEYS[1]))
if hb and now - hb <= tonumber(ARGV[1]) then return 1 end
return 0
"""
)

#: Cluster input, the app's slot. KEYS: the app's session, its "in" seq, hold, bytes. ARGV:
#: expected runner, its heartbeat fresh ('1'/'0', from ``_FRESH`` just before), blob, max
#: messages, max bytes, hold ttl ms, seq ttl ms. Returns as ``_INPUT`` (the publish is the
#: caller's next step, on the runner's slot).
_INPUT_APP = (
    SESSION_RUNNER
    + _RELAY_FUNCTIONS
    + """
local runner = session_runner(redis.call('GET', KEYS[1]))
if not runner then return {0} end
if runner ~= ARGV[1] then return {2, runner} end
if ARGV[2] ~= '1' then return {1} end
local seq = relay(KEYS[2], KEYS[3], KEYS[4], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), tonumber(ARGV[7]))
return {3, seq}
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


@dataclass(frozen=True, slots=True)
class Recipient:
    """One stream a message goes into; ``channel`` None: the caller delivers it itself."""

    app_session_id: str
    channel: str | None
    #: What the script puts before the held blob and the seq when it publishes.
    prefix: bytes


@dataclass(frozen=True, slots=True)
class OutputResult:
    #: Seqs in the recipients' order; None when the recipients were not the paired apps.
    seqs: list[int] | None
    #: The apps actually addressed (set only when ``seqs`` is None).
    members: list[str]


class InputStatus(IntEnum):
    NOT_PAIRED = 0
    RUNNER_OFFLINE = 1
    OTHER_RUNNER = 2
    RELAYED = 3


@dataclass(frozen=True, slots=True)
class InputResult:
    status: InputStatus
    runner_id: str | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Held:
    """What a stream holds after a seq: the messages, and what it no longer has."""

    #: The stream's newest seq (0: nothing was ever relayed, or it expired).
    last_seq: int
    #: Seq of ``messages[0]`` (when there are messages).
    first_seq: int
    messages: list[bytes]


class RelayService:
    """Seq counters and holds per appSessionId and direction; one round trip per call on one
    Redis, a few single-slot steps on a cluster (``layout.cluster``)."""

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
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.ttl_ms = int(ttl_s * 1000)
        # The counter outlives the hold: a stream that went quiet continues its numbering.
        self.seq_ttl_ms = max(int(seq_ttl_s * 1000), self.ttl_ms)
        self.heartbeat_timeout_ms = int(heartbeat_timeout_s * 1000)
        self._limits = [self.max_messages, self.max_bytes, self.ttl_ms, self.seq_ttl_ms]
        self._read = Script(redis, _READ)
        self._key_cache: dict[str, dict[str, list[str]]] = {OUT: {}, IN: {}}
        if layout.cluster:
            self._scripts = [Script(redis, _OUTPUT_ONE), Script(redis, _FRESH)]
            self._scripts.append(Script(redis, _INPUT_APP))
            self._output_one, self._fresh, self._input_app = self._scripts
        else:
            header = _limits_header(
                self.max_messages,
                self.max_bytes,
                self.ttl_ms,
                self.seq_ttl_ms,
                self.heartbeat_timeout_ms,
            )
            self._output = Script(redis, header + _OUTPUT)
            self._input = Script(redis, header + _INPUT)
            self._scripts = [self._output, self._input]

    async def load_scripts(self) -> None:
        await preload(self.redis, *self._scripts, self._read)

    def _resume_keys(self, app_session_id: str, direction: str) -> list[str]:
        """Seq, hold and bytes keys (not to be changed: cached, the same on every message)."""
        cache = self._key_cache[direction]
        found = cache.get(app_session_id)
        if found is None:
            if len(cache) >= _KEY_CACHE_SIZE:
                cache.clear()
            layout = self.layout
            found = cache[app_session_id] = [
                layout.resume_seq(app_session_id, direction),
                layout.resume_hold(app_session_id, direction),
                layout.resume_bytes(app_session_id, direction),
            ]
        return found

    async def output(
        self, runner_id: str, target: str | None, recipients: Sequence[Recipient], blob: bytes
    ) -> OutputResult:
        """Relay one runner:output to ``recipients`` if they are exactly the paired apps
        (or, with ``target``, the target if it is paired).

        On a cluster a recipient whose session no longer points at the runner (unpaired
        between the two steps) gets seq 0: nothing was held or published for it."""
        if self.layout.cluster:
            return await self._output_cluster(runner_id, target, recipients, blob)
        keys_: list[str] = [self.layout.runner_apps(runner_id)]
        args: list[str | bytes | int] = [target or "", len(recipients), blob]
        for r in recipients:
            keys_ += self._resume_keys(r.app_session_id, OUT)
            args += [r.app_session_id, r.channel or "", r.prefix]
        reply = await self._output(keys_, args)
        if int(reply[0]) == 1:
            return OutputResult([int(s) for s in reply[1:]], [])
        return OutputResult(None, sorted(as_str(m) for m in reply[1:]))

    async def _output_cluster(
        self, runner_id: str, target: str | None, recipients: Sequence[Recipient], blob: bytes
    ) -> OutputResult:
        # Step 1, the runner's slot: who is paired. Step 2, each app's slot at once.
        apps_key = self.layout.runner_apps(runner_id)
        if target:
            members = [target] if await self.redis.sismember(apps_key, target) else []
        else:
            members = [as_str(m) for m in await self.redis.smembers(apps_key)]
        expected = [r.app_session_id for r in recipients]
        if len(expected) != len(members) or set(expected) != set(members):
            return OutputResult(None, sorted(members))
        if not recipients:
            return OutputResult([], [])
        seqs = await asyncio.gather(*(self._output_to(runner_id, r, blob) for r in recipients))
        return OutputResult(list(seqs), [])

    async def _output_to(self, runner_id: str, r: Recipient, blob: bytes) -> int:
        app = r.app_session_id
        args: list[Any] = [runner_id, blob, *self._limits]
        args += ["0" if r.channel is None else "1", r.channel or "", r.prefix]
        seq = await self._output_one([self.layout.session(app), *self._resume_keys(app, OUT)], args)
        return int(seq)

    async def input(
        self,
        app_session_id: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult:
        """Relay one app:command if the app is paired with ``expected_runner``, online."""
        if self.layout.cluster:
            return await self._input_cluster(app_session_id, expected_runner, channel, prefix, blob)
        reply = await self._input(
            [
                self.layout.session(app_session_id),
                *self._resume_keys(app_session_id, IN),
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

    async def _input_cluster(
        self,
        app: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult:
        layout = self.layout
        if expected_runner is None:
            # Who is it paired with? The caller asks again naming it, as on one Redis.
            runner = _runner_of(await self.redis.get(layout.session(app)))
            if runner is None:
                return InputResult(InputStatus.NOT_PAIRED)
            return InputResult(InputStatus.OTHER_RUNNER, runner)
        # 1. the runner's slot: online? 2. the app's slot: still paired with it, seq, hold.
        # 3. the runner's slot again: the publish. Nothing is held for an offline runner.
        fresh = await self._is_fresh(expected_runner)
        reply = await self._input_app(
            [layout.session(app), *self._resume_keys(app, IN)],
            [expected_runner, "1" if fresh else "0", blob, *self._limits],
        )
        status = InputStatus(int(reply[0]))
        if status is InputStatus.OTHER_RUNNER:
            return InputResult(status, as_str(reply[1]))
        if status is not InputStatus.RELAYED:
            return InputResult(status)
        seq = int(reply[1])
        if channel is not None:
            await self.redis.execute_command(  # type: ignore[no-untyped-call]
                layout.publish_command, channel, published(prefix, blob, seq)
            )
        return InputResult(status, expected_runner, seq)

    async def _is_fresh(self, runner_id: str) -> bool:
        fresh = await self._fresh([self.layout.heartbeat(runner_id)], [self.heartbeat_timeout_ms])
        return bool(int(fresh))

    async def held(
        self, app_session_id: str, direction: str, after: int, *, paired_with: str | None = None
    ) -> Held | None:
        """Held messages of a stream with seq > ``after``; None when ``paired_with`` is given
        and the app is not paired with that runner (one slot in either layout: the app's)."""
        reply = await self._read(
            [
                *self._resume_keys(app_session_id, direction)[:2],
                self.layout.session(app_session_id),
            ],
            [after, paired_with or ""],
        )
        if int(reply[0]) == -1:
            return None
        return Held(int(reply[0]), int(reply[1]), [bytes(m) for m in reply[2]])


def _runner_of(raw: bytes | str | None) -> str | None:
    """The runnerId of a session value, None when absent or not a session."""
    if raw is None:
        return None
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    runner = decoded.get("runnerId") if isinstance(decoded, dict) else None
    return runner if isinstance(runner, str) else None
