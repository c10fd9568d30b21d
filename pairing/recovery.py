"""Connection state recovery: what a Socket.IO private session id (pid) names.

Socket.IO clients (socket.io-client since 4.6, the Dart client since 2.0.3) implement the
protocol's connection state recovery: when the server's CONNECT reply carries a ``pid``, they
keep it and the last argument of the last event they received (the event's *offset*, a
string), and present both in the CONNECT of their next connection. The server then restores
the connection (same sid, same rooms) and first sends every event the client missed.

The gateway already keeps an ordered log of what an app misses: its ``out`` stream, the seq
counter and the hold of ``pairing.relay``. So an offset here is a position in that log (the
seq of the last ``terminal:output`` the client had, as a decimal string), and a pid only has
to name the connection it belongs to: its sid, its appSessionId, whether it was an app, and
where its session started in that log. That record lives in Redis (so every replica can restore it),
under the SHA-256 of the pid, for ``max_disconnection_s`` after the connection ended.

Why the digest: the pid is a bearer credential (whoever presents it becomes that app for its
runner). Looking it up by its digest means neither Redis's lookup time nor a copy of its
data reveals a usable pid; the pid itself, 192 bits from ``secrets``, is never stored.

A record carries the token of the connection that wrote it (``PidRecord.token``): a record
is changed or dropped only by the connection that owns it now, so an older connection that
ends after a newer one restored the pid (on another replica, say) leaves the newer one's
record alone. Changes compare the token in Lua, one round trip each.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import msgspec

from pairing import keys
from pairing.relay import OUT, Held
from pairing.scripts import Script, preload
from pairing.store import Redis

#: Random bytes of a pid (192 bits; 32 URL-safe base64 characters).
PID_BYTES = 24
#: Length of a connection's record token, which prefixes the stored record.
TOKEN_CHARS = 16
#: Longest pid or offset looked at; anything longer is not one (no hashing of megabytes).
MAX_PID_CHARS = 64
MAX_OFFSET_DIGITS = 19
#: How long the record of a live connection is kept. A connection ending normally sets it to
#: the recovery window; only one whose replica died (no disconnect ran) keeps it this long.
LIVE_TTL_S = 86_400.0

_PID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

#: KEYS[1]: the record. ARGV: token of the connection that must own it, new value ('' =
#: delete), TTL ms. Returns 1 when the record was that connection's (and is changed), else 0.
_UPDATE = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


class PidRecord(msgspec.Struct, array_like=True, frozen=True):
    """What a pid names (stored as the token then msgspec JSON of the rest)."""

    #: The connection that owns the record now (``new_token``).
    token: str
    sid: str
    app_session_id: str
    #: The connection was an app (in its app's room), not a runner or a bare connection.
    app: bool
    #: Its position in the app's output log when the session started (-1: not known): where
    #: a client is that presents the pid without an offset, having received no event.
    position: int = -1


_encode_rest = msgspec.json.Encoder().encode
_decode_rest = msgspec.json.Decoder(tuple[str, str, bool, int]).decode


def new_pid() -> str:
    return secrets.token_urlsafe(PID_BYTES)


def new_token() -> str:
    return secrets.token_hex(TOKEN_CHARS // 2)


def is_pid_shaped(value: object) -> bool:
    """A string that could be a pid this gateway made (no lookup for anything else)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_PID_CHARS
        and all(c in _PID_CHARS for c in value)
    )


def format_offset(seq: int) -> str:
    """The offset an event carries: the position in the app's output log, as text."""
    return str(seq)


def parse_offset(value: object) -> int | None:
    """A position from a client's offset; None for anything this gateway did not send."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_OFFSET_DIGITS:
        return None
    if not value.isascii() or not value.isdigit() or (value[0] == "0" and len(value) > 1):
        return None
    return int(value)


def covers(held: Held, after: int) -> bool:
    """Whether the log still has every message after position ``after``.

    False for a position beyond its last seq (not an offset of this log: the counter started
    over, or the client made it up) and when the hold no longer has the first message after
    it: a restore must send everything missed, or not happen.
    """
    if after > held.last_seq:
        return False
    if after == held.last_seq:
        return True
    return bool(held.messages) and held.first_seq <= after + 1


def encode_record(record: PidRecord) -> bytes:
    rest = (record.sid, record.app_session_id, record.app, record.position)
    return record.token.encode() + _encode_rest(rest)


def decode_record(raw: bytes | str) -> PidRecord | None:
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if len(data) <= TOKEN_CHARS:
        return None
    try:
        sid, app_session_id, app, position = _decode_rest(data[TOKEN_CHARS:])
        token = data[:TOKEN_CHARS].decode("ascii")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return PidRecord(token, sid, app_session_id, app, position)


class RecoveryService:
    """Pid records in Redis, shared by every replica; one round trip per operation."""

    def __init__(
        self,
        redis: Redis,
        *,
        window_s: float = 120.0,
        live_ttl_s: float = LIVE_TTL_S,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.window_ms = max(int(window_s * 1000), 1)
        self.live_ttl_ms = max(int(live_ttl_s * 1000), self.window_ms)
        self._update = Script(redis, _UPDATE)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._update)

    def _key(self, pid: str) -> str:
        return self.layout.recovery_pid(hashlib.sha256(pid.encode()).hexdigest())

    async def open(self, pid: str, record: PidRecord, *, read_position: bool = False) -> int:
        """Store a new (or restored) connection's record, kept while it lives.

        With ``read_position``, also the app's current position in its output log, read in
        the same round trip (the position of a client that has received nothing yet);
        else the record's own position is returned.
        """
        store = self.redis.set(self._key(pid), encode_record(record), px=self.live_ttl_ms)
        if not read_position:
            await store
            return record.position
        seq_key = self.layout.resume_seq(record.app_session_id, OUT)
        _, seq = await asyncio.gather(store, self.redis.get(seq_key))
        return int(seq) if seq is not None else 0

    async def find(self, pid: str) -> PidRecord | None:
        """The record a pid names, None when there is none (expired, never made, malformed)."""
        if not is_pid_shaped(pid):
            return None
        raw = await self.redis.get(self._key(pid))
        return None if raw is None else decode_record(raw)

    async def update(self, pid: str, record: PidRecord) -> bool:
        """Rewrite a live connection's record (it became an app), if it still owns it."""
        return await self._change(pid, record.token, encode_record(record), self.live_ttl_ms)

    async def close(self, pid: str, record: PidRecord, *, recoverable: bool) -> bool:
        """The connection ended: keep its record for the window (``recoverable``), or drop
        it; either only if the connection still owns it."""
        if not recoverable:
            return await self._change(pid, record.token, b"", 0)
        return await self._change(pid, record.token, encode_record(record), self.window_ms)

    async def _change(self, pid: str, token: str, value: bytes, ttl_ms: int) -> bool:
        done = await self._update([self._key(pid)], [token, value, ttl_ms])
        return bool(int(done))
