"""PairingHistoryService: an audit trail of pairing changes in one capped Redis Stream.

The entry id's millisecond part is the Redis server's clock, so ``at`` needs no field of its
own and agrees across replicas.
"""

from __future__ import annotations

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
        self, redis: Redis, *, max_len: int = 100_000, stream: str = keys.HISTORY_STREAM
    ) -> None:
        self.redis = redis
        self.max_len = max_len
        self.stream = stream
        self._record_many = Script(redis, _RECORD_MANY)

    async def load_scripts(self) -> None:
        await preload(self.redis, self._record_many)

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
            self.stream,
            fields,  # type: ignore[arg-type]
            maxlen=self.max_len,
            approximate=True,
        )
        return as_str(entry_id)

    async def record_many(self, entries: list[NewEntry]) -> None:
        """Append several entries, in order, in one round trip (nothing sent for none)."""
        if not entries:
            return
        args: list[str | int] = [self.max_len]
        for e in entries:
            fields = entry_fields(e.event, e.app_session_id, e.runner_id, e.reason)
            args.append(2 * len(fields))
            for name, value in fields.items():
                args += (name, value)
        await self._record_many([self.stream], args)

    async def recent(
        self,
        limit: int = 100,
        *,
        runner_id: str | None = None,
        app_session_id: str | None = None,
        max_scan: int = 100_000,
    ) -> list[HistoryEntry]:
        """Newest first; with a filter, scans back at most ``max_scan`` entries."""
        out: list[HistoryEntry] = []
        upper = "+"
        scanned = 0
        page = limit if runner_id is None and app_session_id is None else _SCAN_PAGE
        while len(out) < limit and scanned < max_scan:
            batch = await self.redis.xrevrange(self.stream, max=upper, min="-", count=page)
            if not batch:
                break
            for raw_id, raw_fields in batch:
                if raw_id is None:  # only XAUTOCLAIM-style replies have holes
                    continue
                entry = _entry(raw_id, raw_fields)
                if runner_id is not None and entry.runner_id != runner_id:
                    continue
                if app_session_id is not None and entry.app_session_id != app_session_id:
                    continue
                out.append(entry)
                if len(out) >= limit:
                    break
            scanned += len(batch)
            if len(batch) < page:
                break
            last_id = batch[-1][0]
            if last_id is None:
                break
            upper = "(" + as_str(last_id)
        return out


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
