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

#: One Redis only: the keys a script finds from what it reads (a previous runner's apps set, a
#: set member's session, a code's runner's heartbeat), which cannot be declared before it
#: runs. Spelled from ``pairing.keys``; a cluster runs such operations as single-slot steps
#: with every key declared (``pairing.cluster``).
DERIVED_KEYS = f"""
local function session_key_of(app) return '{keys.SESSION_PREFIX}' .. app end
local function apps_key_of(runner) return '{keys.RUNNER_APPS_PREFIX}' .. runner end
local function heartbeat_key_of(runner) return '{keys.HEARTBEAT_PREFIX}' .. runner end
local function runner_code_key_of(runner) return '{keys.RUNNER_CODE_PREFIX}' .. runner end
local function owner_key_of(runner) return '{keys.OWNER_PREFIX}' .. runner end
"""

#: Lua: ``session_runner(raw)``, the runnerId of a stored session (raw GET reply) or false
#: (none, or not a session the scripts wrote). Every script that reads a session decodes it
#: with this.
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

#: Lua: ``session_json(app, runner, now)``, a session as ``PairingSession`` encodes it
#: (``pairing.models``), paired at ``now``.
SESSION_JSON = """
local function session_json(app, runner, now)
  return '{"appSessionId":' .. cjson.encode(app) .. ',"runnerId":' .. cjson.encode(runner)
    .. ',"pairedAt":' .. string.format('%.0f', now) .. ',"isActive":true}'
end
"""

#: Lua: ``fresh_heartbeat(key, timeout_ms)``, the heartbeat at ``key`` if it is at most
#: ``timeout_ms`` old by the server's clock, else false: the one rule by which a runner is
#: online. Expects ``NOW_MS``.
HEARTBEAT_FRESH = """
local function fresh_heartbeat(key, timeout_ms)
  local hb = tonumber(redis.call('GET', key))
  if hb and now - hb <= tonumber(timeout_ms) then return hb end
  return false
end
"""

#: Is a runner online? KEYS: its heartbeat. ARGV: timeout ms. Returns 1 or 0.
ONLINE = (
    NOW_MS
    + HEARTBEAT_FRESH
    + """
if fresh_heartbeat(KEYS[1], ARGV[1]) then return 1 end
return 0
"""
)

#: Remove every session of runner ``runner``'s set whose key still points at the runner.
#: Expects ``DERIVED_KEYS``, ``SESSION_RUNNER`` and locals ``runner``, ``apps_key``; leaves
#: ``removed``.
REMOVE_ALL_FOR_RUNNER = """
local removed = {}
local members = redis.call('SMEMBERS', apps_key)
for _, app in ipairs(members) do
  local skey = session_key_of(app)
  if session_runner(redis.call('GET', skey)) == runner then
    redis.call('DEL', skey)
    removed[#removed + 1] = app
  end
end
redis.call('DEL', apps_key)
"""

#: Pair app with runner, leaving the old runner's set. Expects ``DERIVED_KEYS``,
#: ``SESSION_RUNNER``, ``SESSION_JSON`` and locals ``app``, ``runner``, ``session_key``,
#: ``apps_key`` (the runner's) and ``now``; leaves ``previous`` ('' when unpaired before).
MOVE_APP = """
local previous = session_runner(redis.call('GET', session_key)) or ''
if previous ~= '' and previous ~= runner then
  redis.call('SREM', apps_key_of(previous), app)
end
redis.call('SET', session_key, session_json(app, runner, now))
redis.call('SADD', apps_key, app)
"""


#: Lua: ``refused``, the reason a runner's key binding ``bound`` (or the operator's token
#: verdict) refuses the presented key, nil when it does not (``results.RefusalReason``).
#: Expects ``presented``, ``bound``, ``token_ok`` and ``key_required`` ('1'/'0').
KEY_VERDICT = """
local refused = nil
if token_ok ~= '1' then refused = 'BAD_TOKEN'
elseif bound and presented == '' then refused = 'KEY_MISSING'
elseif bound and bound ~= presented then refused = 'KEY_MISMATCH'
elseif not bound and presented == '' and key_required == '1' then refused = 'KEY_REQUIRED'
end
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
