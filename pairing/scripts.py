"""Lua scripts: one per operation, run by SHA (loaded again on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from pairing.store import Redis

#: Current time in epoch ms from the Redis server: the one clock every replica shares.
NOW_MS = """
local __t = redis.call('TIME')
local now = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
"""

#: Remove every session of runner KEYS[1]-set whose key still points at ARGV runner.
#: Expects locals ``runner``, ``apps_key``, ``session_prefix``; leaves ``removed``.
REMOVE_ALL_FOR_RUNNER = """
local removed = {}
local members = redis.call('SMEMBERS', apps_key)
for _, app in ipairs(members) do
  local skey = session_prefix .. app
  local raw = redis.call('GET', skey)
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' and decoded['runnerId'] == runner then
      redis.call('DEL', skey)
      removed[#removed + 1] = app
    end
  end
end
redis.call('DEL', apps_key)
"""

#: Pair app with runner, leaving the old runner's set. Expects locals ``app``, ``runner``,
#: ``session_key``, ``apps_prefix`` and ``now``; leaves ``previous`` ('' when unpaired before).
MOVE_APP = """
local previous = ''
local old_raw = redis.call('GET', session_key)
if old_raw then
  local ok, decoded = pcall(cjson.decode, old_raw)
  if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
    previous = decoded['runnerId']
    if previous ~= runner then redis.call('SREM', apps_prefix .. previous, app) end
  end
end
redis.call('SET', session_key, '{"appSessionId":' .. cjson.encode(app) .. ',"runnerId":'
  .. cjson.encode(runner) .. ',"pairedAt":' .. string.format('%.0f', now)
  .. ',"isActive":true}')
redis.call('SADD', apps_prefix .. runner, app)
"""


class Script:
    """A Lua script bound to one client; call it like a coroutine function.

    EVALSHA is sent directly (redis-py's ``register_script`` adds two wrappers and an
    import per call on the hottest path); on NOSCRIPT, after a SCRIPT FLUSH or against a
    fresh server, the script is loaded and the call sent once more, as redis-py does.
    """

    __slots__ = ("_client", "sha", "source")

    def __init__(self, client: Redis, source: str) -> None:
        self._client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        send: Any = self._client.execute_command  # untyped in redis-py
        try:
            return await send("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(self.source)
            return await send("EVALSHA", self.sha, len(keys), *keys, *args)


async def preload(client: Redis, *scripts: Script) -> None:
    """SCRIPT LOAD at start-up so that the first real call is a single EVALSHA."""
    for script in scripts:
        await client.script_load(script.source)


def fmt_ms() -> str:
    """Lua snippet that renders ``now`` as an integer string (avoids 1.7e+12 notation)."""
    return "string.format('%.0f', now)"


def as_str(value: bytes | str) -> str:
    """Redis replies are bytes with a real client and may be str elsewhere."""
    return value.decode() if isinstance(value, bytes) else value
