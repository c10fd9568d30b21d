"""``RelayService`` on a cluster: a runner's app set, each app's keys and each room channel
sit in different slots, so an operation is a few single-slot steps instead of one script
(docs/round-trips.md, docs/architecture.md).

Output checks the runner's app set (runner slot), then runs one script per app on the app's
slot (session still pointing at the runner, seq, hold, and ``SPUBLISH`` to the app's room
channel, which shares the app's tag). A caller whose recipients are kept current otherwise
(the gateway: by the ``pairing:paired`` / ``pairing:app_unpaired`` notifications its runner
socket receives, and a set read at least every second) says so, and the set is not read:
a relayed message then costs one step per app, as on one Redis. Input checks the runner's
heartbeat (runner slot; not again until that answer could have gone stale), then the app's
session, seq and hold (app slot), then ``SPUBLISH``es to the runner's room channel (runner
slot). Each step on its own is atomic; the order is such that nothing is held or published
that the one-Redis script would have refused (but for a runner whose release is half done
while its remembered heartbeat is still fresh: the app's step refuses once the release has
reached the app's session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from pairing import keys
from pairing.envelope import PUBLISH_ENVELOPE, published
from pairing.models import session_runner
from pairing.scripts import HEARTBEAT_FRESH, NOW_MS, SESSION_RUNNER, Script, as_str, preload
from pairing.store import Redis
from pairing.streams import (
    HOLD_APPEND,
    IN,
    OUT,
    InputResult,
    InputStatus,
    OutputResult,
    Recipient,
    ResumeKeys,
)

#: Output, one app (its slot). KEYS: the app's session, its "out" seq, hold, bytes.
#: ARGV: runner, blob, max messages, max bytes, hold ttl ms, seq ttl ms, publish ('1'/'0'),
#: channel (the app's room, same slot), prefix. Returns the seq, or 0 (nothing written)
#: when the session no longer points at the runner (an app set entry a crash or a racing
#: unpair left behind).
_OUTPUT_ONE = (
    SESSION_RUNNER
    + PUBLISH_ENVELOPE
    + HOLD_APPEND
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

#: Is the runner's heartbeat fresh? KEYS: heartbeat. ARGV: timeout ms. Returns how many ms it
#: stays fresh without a newer beat (at least 1), or 0 when it is stale.
_FRESH_FOR = (
    NOW_MS
    + HEARTBEAT_FRESH
    + """
local hb = fresh_heartbeat(KEYS[1], ARGV[1])
if hb then return tonumber(ARGV[1]) - (now - hb) + 1 end
return 0
"""
)

#: Runners whose freshness one replica remembers before it drops the expired answers.
_FRESH_CACHE_MAX = 10_000

#: Input, the app's slot. KEYS: the app's session, its "in" seq, hold, bytes. ARGV:
#: expected runner, its heartbeat fresh ('1'/'0', from ``_FRESH_FOR`` or remembered), blob,
#: max messages, max bytes, hold ttl ms, seq ttl ms. Returns as the one-Redis input script
#: (the publish is the caller's next step, on the runner's slot).
_INPUT_APP = (
    SESSION_RUNNER
    + HOLD_APPEND
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


class ClusterRelay:
    """Output and input as single-slot steps."""

    def __init__(
        self,
        redis: Redis,
        layout: keys.KeyLayout,
        resume_keys: ResumeKeys,
        *,
        limits: list[int],
        heartbeat_timeout_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self._resume_keys = resume_keys.of
        #: Max messages, max bytes, hold ttl ms, seq ttl ms: arguments of every call.
        self._limits = limits
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._output_one = Script(redis, _OUTPUT_ONE)
        self._fresh_for = Script(redis, _FRESH_FOR)
        self._input_app = Script(redis, _INPUT_APP)
        #: runner -> ``clock()`` until which its heartbeat is known to be fresh.
        self._clock = clock
        self._fresh_until: dict[str, float] = {}

    async def load_scripts(self) -> None:
        await preload(self.redis, self._output_one, self._fresh_for, self._input_app)

    async def output(
        self,
        runner_id: str,
        target: str | None,
        recipients: Sequence[Recipient],
        blob: bytes,
        *,
        members_known: bool = False,
    ) -> OutputResult:
        # Step 1, the runner's slot: who is paired (skipped when the caller's recipients are
        # known current). Step 2, each app's slot at once; each checks its own session.
        if members_known:
            return await self._output_all(runner_id, recipients, blob)
        apps_key = self.layout.runner_apps(runner_id)
        if target:
            members = [target] if await self.redis.sismember(apps_key, target) else []
        else:
            members = [as_str(m) for m in await self.redis.smembers(apps_key)]
        expected = [r.app_session_id for r in recipients]
        if len(expected) != len(members) or set(expected) != set(members):
            return OutputResult(None, sorted(members))
        return await self._output_all(runner_id, recipients, blob)

    async def _output_all(
        self, runner_id: str, recipients: Sequence[Recipient], blob: bytes
    ) -> OutputResult:
        if not recipients:
            return OutputResult([], [])
        if len(recipients) == 1:  # (the usual case: no task for gather to make)
            return OutputResult([await self._output_to(runner_id, recipients[0], blob)], [])
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
        app: str,
        expected_runner: str | None,
        channel: str | None,
        prefix: bytes,
        blob: bytes,
    ) -> InputResult:
        layout = self.layout
        if expected_runner is None:
            # Who is it paired with? The caller asks again naming it, as on one Redis.
            runner = session_runner(await self.redis.get(layout.session(app)))
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
        """Whether the runner's heartbeat is fresh. A fresh answer holds until the heartbeat
        could go stale (the remaining time, counted from before the question was sent, so
        never past the server's own deadline), and is not asked again until then: a busy
        stream of app:commands costs one step, not two. A runner that leaves (release) is seen
        by the next step instead, which finds the app no longer paired with it."""
        now = self._clock()
        if self._fresh_until.get(runner_id, 0.0) > now:
            return True
        remaining_ms = int(
            await self._fresh_for([self.layout.heartbeat(runner_id)], [self.heartbeat_timeout_ms])
        )
        if remaining_ms <= 0:
            self._fresh_until.pop(runner_id, None)
            return False
        if len(self._fresh_until) >= _FRESH_CACHE_MAX:
            self._fresh_until = {r: t for r, t in self._fresh_until.items() if t > now}
        self._fresh_until[runner_id] = now + remaining_ms / 1000
        return True
