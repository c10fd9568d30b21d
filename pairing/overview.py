"""What the operator console shows: online runners, pairings, replica reports.

Reads only (besides each replica's own report): the runners come from the sweeper's index
(``runner:last_seen``, the shards on a cluster) filtered by the heartbeat timeout, each with
its owner (``<replicaId>/<sid>``) and its apps set; pairings from those sets and the apps'
session keys. These are operator reads, bounded by ``limit``, not on any client's path.

Replicas report themselves into one hash, ``gateway:replicas`` (replicaId -> JSON report),
every ``report_interval_s``: a replica that stops reporting shows as down, and its entry is
dropped once it is ``forget_after_s`` old. Since when each runner is connected to a replica
is in that replica's own hash, ``gateway:replica_runners:<replicaId>``, which it updates by
difference (the runners that came and went since its last report) and which expires when
the replica stops; the console reads it only for the runners it lists.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import msgspec

from pairing import keys
from pairing.models import decode_session
from pairing.scripts import as_str
from pairing.store import Redis


class RunnerView(msgspec.Struct, rename="camel", frozen=True):
    runner_id: str
    #: The replica holding its connection (None when the owner key is gone).
    replica: str | None
    last_heartbeat: int
    apps: list[str]
    #: When its replica first saw it registered (epoch ms; None until reported).
    since: int | None = None


class PairingView(msgspec.Struct, rename="camel", frozen=True):
    app_session_id: str
    runner_id: str
    paired_at: int | None


class ReplicaReport(msgspec.Struct, rename="camel", frozen=True):
    """What one replica says about itself."""

    replica_id: str
    started_at: int
    reported_at: int
    apps: int
    runners: int
    store: bool
    fanout: bool


_report_decoder = msgspec.json.Decoder(ReplicaReport)
_encoder = msgspec.json.Encoder()


def _now_ms() -> int:
    return int(time.time() * 1000)


class OperatorOverview:
    """The console's reads over the store, and the replicas' reports."""

    def __init__(
        self,
        redis: Redis,
        *,
        heartbeat_timeout_s: float = 30.0,
        layout: keys.KeyLayout = keys.SINGLE_NODE,
        forget_after_s: float = 3600.0,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.heartbeat_timeout_ms = int(heartbeat_timeout_s * 1000)
        self.forget_after_ms = int(forget_after_s * 1000)

    async def online_runners(self, limit: int = 500) -> tuple[int, list[RunnerView]]:
        """(how many are online, the ``limit`` most recently beating), newest first."""
        low = _now_ms() - self.heartbeat_timeout_ms
        shards = self.layout.last_seen_shards()
        counts, pages = await asyncio.gather(
            asyncio.gather(*(self.redis.zcount(s, low, "+inf") for s in shards)),
            asyncio.gather(
                *(
                    self.redis.zrevrangebyscore(s, "+inf", low, start=0, num=limit, withscores=True)
                    for s in shards
                )
            ),
        )
        entries = cast(list[tuple[bytes | str, float]], [e for page in pages for e in page])
        found = sorted(
            ((as_str(member), int(score)) for member, score in entries),
            key=lambda item: -item[1],
        )[:limit]
        owners, app_sets = await asyncio.gather(
            asyncio.gather(*(self.redis.get(self.layout.owner(r)) for r, _ in found)),
            asyncio.gather(*(self.redis.smembers(self.layout.runner_apps(r)) for r, _ in found)),
        )
        replicas = [None if o is None else as_str(o).split("/", 1)[0] for o in owners]
        since = await self._since(
            [(replica, runner) for replica, (runner, _) in zip(replicas, found, strict=True)]
        )
        runners = []
        for (runner_id, beat), replica, apps in zip(found, replicas, app_sets, strict=True):
            runners.append(
                RunnerView(
                    runner_id=runner_id,
                    replica=replica,
                    last_heartbeat=beat,
                    apps=sorted(as_str(a) for a in apps),
                    since=since.get((replica or "", runner_id)),
                )
            )
        return sum(int(c) for c in counts), runners

    async def _since(self, held: list[tuple[str | None, str]]) -> dict[tuple[str, str], int]:
        """(replica, runner) -> since, from each replica's hash (one HMGET per replica)."""
        by_replica: dict[str, list[str]] = {}
        for replica, runner in held:
            if replica is not None:
                by_replica.setdefault(replica, []).append(runner)
        names = list(by_replica)
        values = await asyncio.gather(
            *(self.redis.hmget(keys.replica_runners(r), by_replica[r]) for r in names)
        )
        out = {}
        for replica, got in zip(names, values, strict=True):
            for runner, value in zip(by_replica[replica], got, strict=True):
                if value is not None:
                    out[(replica, runner)] = int(value)
        return out

    async def report_runners(
        self, replica_id: str, *, came: dict[str, int], went: list[str], ttl_ms: int
    ) -> bool:
        """Update a replica's runner hash by difference and renew its TTL; False when the
        hash had expired (the caller then writes every runner again)."""
        key = keys.replica_runners(replica_id)
        if came:
            await self.redis.hset(key, mapping=came)  # type: ignore[arg-type]
        if went:
            await self.redis.hdel(key, *went)
        return bool(await self.redis.pexpire(key, ttl_ms))

    async def pairings(self, runners: list[RunnerView]) -> list[PairingView]:
        """The pairings of these runners, with when each was made (from the session key)."""
        pairs = [(app, r.runner_id) for r in runners for app in r.apps]
        raw = await asyncio.gather(*(self.redis.get(self.layout.session(a)) for a, _ in pairs))
        out = []
        for (app, runner_id), value in zip(pairs, raw, strict=True):
            paired_at = None
            if value is not None:
                try:
                    paired_at = decode_session(value).paired_at
                except msgspec.DecodeError:
                    paired_at = None
            out.append(PairingView(app_session_id=app, runner_id=runner_id, paired_at=paired_at))
        return out

    async def report(self, report: ReplicaReport) -> None:
        """Write this replica's report (one command)."""
        await self.redis.hset(keys.REPLICAS, report.replica_id, _encoder.encode(report))

    async def replica_reports(self) -> list[ReplicaReport]:
        """Every replica's latest report, oldest-started first; reports older than
        ``forget_after_s`` are deleted as they are read."""
        raw = await self.redis.hgetall(keys.REPLICAS)
        now = _now_ms()
        reports, stale = [], []
        for field, value in raw.items():
            try:
                report = _report_decoder.decode(value)
            except msgspec.DecodeError:
                stale.append(as_str(field))
                continue
            if now - report.reported_at > self.forget_after_ms:
                stale.append(as_str(field))
            else:
                reports.append(report)
        if stale:
            await self.redis.hdel(keys.REPLICAS, *stale)
        return sorted(reports, key=lambda r: (r.started_at, r.replica_id))
