"""``RelayService`` on a cluster: a runner's app set, each app's keys and each room channel
sit in different slots, so an operation is a few single-slot steps instead of one script
(docs/round-trips.md, docs/architecture.md).

Output checks the runner's app set (runner slot), then runs one script per app on the app's
slot (session still pointing at the runner, seq, hold, and ``SPUBLISH`` to the app's room
channel, which shares the app's tag). Input checks the runner's heartbeat (runner slot), then
the app's session, seq and hold (app slot), then ``SPUBLISH``es to the runner's room channel
(runner slot). Each step on its own is atomic; the order is such that nothing is held or
published that the one-Redis script would have refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pairing import keys
from pairing.envelope import PUBLISH_ENVELOPE, published
from pairing.models import session_runner
from pairing.scripts import ONLINE, SESSION_RUNNER, Script, as_str, preload
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

#: Input, the app's slot. KEYS: the app's session, its "in" seq, hold, bytes. ARGV:
#: expected runner, its heartbeat fresh ('1'/'0', from ``scripts.ONLINE`` just before), blob,
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
    ) -> None:
        self.redis = redis
        self.layout = layout
        self._resume_keys = resume_keys.of
        #: Max messages, max bytes, hold ttl ms, seq ttl ms: arguments of every call.
        self._limits = limits
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self._output_one = Script(redis, _OUTPUT_ONE)
        self._online = Script(redis, ONLINE)
        self._input_app = Script(redis, _INPUT_APP)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._output_one, self._online, self._input_app)

    async def output(
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
        fresh = await self._online([layout.heartbeat(expected_runner)], [self.heartbeat_timeout_ms])
        reply = await self._input_app(
            [layout.session(app), *self._resume_keys(app, IN)],
            [expected_runner, "1" if int(fresh) else "0", blob, *self._limits],
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
