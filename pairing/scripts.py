"""Lua scripts: one per operation, run by SHA (loaded again on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from pairing import keys
from pairing.store import Redis

#: Current time in epoch ms from the Redis server: the one clock every replica shares.
NOW_MS = """
local __t = redis.call('TIME')
local now = tonumber(__t[1]) * 1000 + math.floor(tonumber(__t[2]) / 1000)
"""

#: Single node only: the keys a script finds from what it reads (a previous runner's apps
#: set, a set member's session, a code's runner's heartbeat), which cannot be declared before
#: it runs. Spelled from ``pairing.keys``; a cluster runs such operations as single-slot steps
#: with every key declared (``pairing.cluster_pairing``).
DERIVED_KEYS = f"""
local function session_key_of(app) return '{keys.SESSION_PREFIX}' .. app end
local function apps_key_of(runner) return '{keys.RUNNER_APPS_PREFIX}' .. runner end
local function heartbeat_key_of(runner) return '{keys.HEARTBEAT_PREFIX}' .. runner end
local function runner_code_key_of(runner) return '{keys.RUNNER_CODE_PREFIX}' .. runner end
local function owner_key_of(runner) return '{keys.OWNER_PREFIX}' .. runner end
"""

#: Lua: ``session_runner(raw)``, the runnerId of a stored session (raw GET reply) or false
#: (none, or not a session the scripts wrote).
SESSION_RUNNER = """
local function session_runner(raw)
  if not raw then return false end
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
    return decoded['runnerId']
  end
  return false
end
"""

#: Remove every session of runner ``runner``'s set whose key still points at the runner.
#: Expects ``DERIVED_KEYS`` and locals ``runner``, ``apps_key``; leaves ``removed``.
REMOVE_ALL_FOR_RUNNER = """
local removed = {}
local members = redis.call('SMEMBERS', apps_key)
for _, app in ipairs(members) do
  local skey = session_key_of(app)
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

#: Pair app with runner, leaving the old runner's set. Expects ``DERIVED_KEYS`` and locals
#: ``app``, ``runner``, ``session_key``, ``apps_key`` (the runner's) and ``now``; leaves
#: ``previous`` ('' when unpaired before).
MOVE_APP = """
local previous = ''
local old_raw = redis.call('GET', session_key)
if old_raw then
  local ok, decoded = pcall(cjson.decode, old_raw)
  if ok and type(decoded) == 'table' and type(decoded['runnerId']) == 'string' then
    previous = decoded['runnerId']
    if previous ~= runner then redis.call('SREM', apps_key_of(previous), app) end
  end
end
redis.call('SET', session_key, '{"appSessionId":' .. cjson.encode(app) .. ',"runnerId":'
  .. cjson.encode(runner) .. ',"pairedAt":' .. string.format('%.0f', now)
  .. ',"isActive":true}')
redis.call('SADD', apps_key, app)
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
