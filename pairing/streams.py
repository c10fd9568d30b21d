"""The relay's streams: per appSessionId and direction, a seq counter and a hold.

What both backends of ``pairing.relay.RelayService`` share: the recipients and results of a
relayed message, the stream's key names, and the Lua that appends a message to its stream.
Held messages are opaque bytes here (the gateway stores msgpack of the message without its
seq: the seq of an entry is implied by its position).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pairing import keys

#: Apps whose key names a service keeps at hand, per direction (then it starts over).
_KEY_CACHE_SIZE = 4096

OUT = "out"  # terminal:output, runner -> app
IN = "in"  # terminal:input, app -> runner

#: Lua: one message appended to a stream: seq INCR, hold append and trim by count and bytes,
#: TTLs. Returns the message's seq. A script that also publishes the message wraps it with
#: ``envelope(prefix, blob, seq)`` (``pairing.envelope.PUBLISH_ENVELOPE``).
HOLD_APPEND = """
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


class ResumeKeys:
    """Seq, hold and bytes keys of each stream, kept at hand (the same on every message)."""

    def __init__(self, layout: keys.KeyLayout) -> None:
        self.layout = layout
        self._cache: dict[str, dict[str, list[str]]] = {OUT: {}, IN: {}}

    def of(self, app_session_id: str, direction: str) -> list[str]:
        """Seq, hold and bytes keys (not to be changed: cached)."""
        cache = self._cache[direction]
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
