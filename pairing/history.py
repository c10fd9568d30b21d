"""PairingHistoryService: an audit trail of pairing changes in capped Redis Streams.

The entry id's millisecond part is the Redis server's clock, so ``at`` needs no field of its
own and agrees across replicas. On one Redis the trail is one stream; in the cluster layout
it is ``keys.SHARDS`` streams on slots spread over the masters (``layout.history(subject)``:
an entry goes to the shard of its runner, or of its app when it has no runner), so no master
takes every append, and reading merges the shards newest first by entry id. Entries of one
stream are in exact order; across streams the order is the masters' clocks' (to the ms).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from enum import StrEnum

import msgspec

from pairing import keys
from pairing.scripts import Script, as_str, preload
from pairing.store import Redis


class HistoryEvent(StrEnum):
    PAIRED = "paired"
    UNPAIRED = "unpaired"
    RUNNER_DISCONNECTED = "runner_disconnected"
    RUNNER_OFFLINE = "runner_offline"
    PAIR_FAILED = "pair_failed"
    #: runner:register refused UNAUTHORIZED (a key or token that does not match); has address.
    REGISTER_REFUSED = "register_refused"
    #: An operator released a runnerId's key binding (``pairing-gateway runner release``).
    RUNNER_KEY_RELEASED = "runner_key_released"


#: Lua: ``record(field, value, ...)`` appends one entry to ``history_key``, trimmed to about
#: ``history_max`` entries like ``XADD MAXLEN ~``. Scripts that change pairings record in the
#: same call (one round trip, and no pairing change without its entry).
RECORD_LUA = """
local function record(...)
  redis.call('XADD', history_key, 'MAXLEN', '~', history_max, '*', ...)
end
"""

#: KEYS: stream. ARGV: max len, then per entry its field count n and n fields/values.
_RECORD_MANY = (
    """
local history_key, history_max = KEYS[1], ARGV[1]
local unpack = unpack or table.unpack
"""
    + RECORD_LUA
    + """
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  record(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return (#ARGV - 1)
"""
)


class NewEntry(msgspec.Struct, frozen=True):
    """An entry to record (the stream gives it its id and time)."""

    event: HistoryEvent
    app_session_id: str | None = None
    runner_id: str | None = None
    reason: str | None = None


def entry_fields(
    event: HistoryEvent | str,
    app_session_id: str | None = None,
    runner_id: str | None = None,
    reason: str | None = None,
) -> dict[str, str]:
    """The stream fields of one entry, in the order every writer uses."""
    fields: dict[str, str] = {"event": HistoryEvent(event).value}
    if app_session_id is not None:
        fields["appSessionId"] = app_session_id
    if runner_id is not None:
        fields["runnerId"] = runner_id
    if reason is not None:
        fields["reason"] = reason
    return fields


class HistoryEntry(msgspec.Struct, frozen=True):
    id: str
    event: str
    at: int  # epoch ms
    app_session_id: str | None = None
    runner_id: str | None = None
    reason: str | None = None
    #: The client address, on entries about a client that is not paired (refused registers).
    address: str | None = None


_SCAN_PAGE = 500


class PairingHistoryService:
    """Append pairing events; read them back newest first, optionally for one runner or app."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_len: int = 100_000,
        stream: str | None = None,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
    ) -> None:
        self.redis = redis
        self.max_len = max_len
        self.layout = layout
        #: ``stream`` puts every entry in that one stream, whatever the layout.
        self._one_stream = stream
        #: The stream of a single-node trail (the override, or ``pairing:history``).
        self.stream = stream or keys.HISTORY_STREAM
        self._record_many = Script(redis, _RECORD_MANY)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._record_many)

    def stream_for(self, app_session_id: str | None = None, runner_id: str | None = None) -> str:
        """The stream an entry about this runner (or, without one, this app) goes to: a
        runner's entries stay in order in one stream. Readers merge every stream, so
        another writer's choice of shard loses nothing."""
        if self._one_stream is not None:
            return self._one_stream
        return self.layout.history(runner_id or app_session_id or "")

    def streams(self) -> tuple[str, ...]:
        """Every stream of the trail (one on a single node, the shards on a cluster)."""
        if self._one_stream is not None:
            return (self._one_stream,)
        return self.layout.history_shards()

    async def record(
        self,
        event: HistoryEvent | str,
        *,
        app_session_id: str | None = None,
        runner_id: str | None = None,
        reason: str | None = None,
        address: str | None = None,
    ) -> str:
        fields = entry_fields(event, app_session_id, runner_id, reason)
        if address is not None:
            fields["address"] = address
        entry_id = await self.redis.xadd(
            self.stream_for(app_session_id, runner_id),
            fields,  # type: ignore[arg-type]
            maxlen=self.max_len,
            approximate=True,
        )
        return as_str(entry_id)

    async def record_many(self, entries: list[NewEntry]) -> None:
        """Append several entries, in order, in one round trip (nothing sent for none).

        They all go to the stream of the first entry, so one call's entries (a runner's
        disconnect: its apps' ``unpaired`` and its own entry) keep their order on a cluster
        too."""
        if not entries:
            return
        first = entries[0]
        args: list[str | int] = [self.max_len]
        for e in entries:
            fields = entry_fields(e.event, e.app_session_id, e.runner_id, e.reason)
            args.append(2 * len(fields))
            for name, value in fields.items():
                args += (name, value)
        await self._record_many([self.stream_for(first.app_session_id, first.runner_id)], args)

    async def recent(
        self,
        limit: int = 100,
        *,
        runner_id: str | None = None,
        app_session_id: str | None = None,
        max_scan: int = 100_000,
    ) -> list[HistoryEntry]:
        """Newest first; with a filter, scans back at most ``max_scan`` entries.

        Each stream is read in pages from its newest entry back, and the pages are merged by
        entry id (the server's ms clock, then a sequence), so on a cluster the shards come
        back as one trail in time order; a stream's next page is read only once its last
        one is used up."""
        out: list[HistoryEntry] = []
        if limit <= 0:
            return out
        filtered = runner_id is not None or app_session_id is not None
        page = _SCAN_PAGE if filtered else limit
        cursors = [_Cursor(stream) for stream in self.streams()]
        scanned = 0
        while len(out) < limit:
            due = [c for c in cursors if not c.buffer and not c.exhausted]
            if due:
                if scanned >= max_scan:
                    for c in due:
                        c.exhausted = True
                else:
                    sizes = await asyncio.gather(*(c.fetch(self.redis, page) for c in due))
                    scanned += sum(sizes)
            live = [c for c in cursors if c.buffer]
            if not live:
                break
            best = max(live, key=lambda c: c.buffer[0][0])
            _, entry = best.buffer.popleft()
            if runner_id is not None and entry.runner_id != runner_id:
                continue
            if app_session_id is not None and entry.app_session_id != app_session_id:
                continue
            out.append(entry)
        return out


class _Cursor:
    """One stream read newest first, a page at a time."""

    __slots__ = ("buffer", "exhausted", "stream", "upper")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.upper = "+"
        self.buffer: deque[tuple[tuple[int, int], HistoryEntry]] = deque()
        self.exhausted = False

    async def fetch(self, redis: Redis, page: int) -> int:
        """Read the next page into the buffer; returns how many entries it had."""
        batch = await redis.xrevrange(self.stream, max=self.upper, min="-", count=page) or []
        last_id = None
        for raw_id, raw_fields in batch:
            if raw_id is None:  # only XAUTOCLAIM-style replies have holes
                continue
            entry = _entry(raw_id, raw_fields)
            ms, _, seq = entry.id.partition("-")
            self.buffer.append(((int(ms), int(seq or 0)), entry))
            last_id = entry.id
        if len(batch) < page or last_id is None:
            self.exhausted = True
        else:
            self.upper = "(" + last_id
        return len(batch)


def _entry(
    raw_id: bytes | str, raw_fields: Mapping[bytes | str, bytes | str] | None
) -> HistoryEntry:
    entry_id = as_str(raw_id)
    fields = {as_str(k): as_str(v) for k, v in (raw_fields or {}).items()}
    return HistoryEntry(
        id=entry_id,
        event=fields.get("event", ""),
        at=int(entry_id.split("-", 1)[0]),
        app_session_id=fields.get("appSessionId"),
        runner_id=fields.get("runnerId"),
        reason=fields.get("reason"),
        address=fields.get("address"),
    )
