"""PairingHistoryService: an audit trail of pairing changes in one capped Redis Stream.

The entry id's millisecond part is the Redis server's clock, so ``at`` needs no field of its
own and agrees across replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import msgspec

from pairing import keys
from pairing.scripts import as_str
from pairing.store import Redis


class HistoryEvent(StrEnum):
    PAIRED = "paired"
    UNPAIRED = "unpaired"
    RUNNER_DISCONNECTED = "runner_disconnected"
    RUNNER_OFFLINE = "runner_offline"
    PAIR_FAILED = "pair_failed"


class HistoryEntry(msgspec.Struct, frozen=True):
    id: str
    event: str
    at: int  # epoch ms
    app_session_id: str | None = None
    runner_id: str | None = None
    reason: str | None = None


_SCAN_PAGE = 500


class PairingHistoryService:
    """Append pairing events; read them back newest first, optionally for one runner or app."""

    def __init__(
        self, redis: Redis, *, max_len: int = 100_000, stream: str = keys.HISTORY_STREAM
    ) -> None:
        self.redis = redis
        self.max_len = max_len
        self.stream = stream

    async def record(
        self,
        event: HistoryEvent | str,
        *,
        app_session_id: str | None = None,
        runner_id: str | None = None,
        reason: str | None = None,
    ) -> str:
        fields: dict[str, str] = {"event": HistoryEvent(event).value}
        if app_session_id is not None:
            fields["appSessionId"] = app_session_id
        if runner_id is not None:
            fields["runnerId"] = runner_id
        if reason is not None:
            fields["reason"] = reason
        entry_id = await self.redis.xadd(
            self.stream,
            fields,  # type: ignore[arg-type]
            maxlen=self.max_len,
            approximate=True,
        )
        return as_str(entry_id)

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
    )
