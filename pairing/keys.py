"""The whole Redis key layout in one place.

The first three families are the original service's layout, which existing deployments share
(binding: docs/protocol.md and docs/architecture.md); the rest are additions the gateway
needs. Nothing else in the project spells a key.
"""

from __future__ import annotations

from redis.crc import key_slot

SESSION_PREFIX = "pairing:session:"
RUNNER_APPS_PREFIX = "pairing:apps:"
HEARTBEAT_PREFIX = "runner:heartbeat:"

#: Sorted set runnerId -> epoch ms of its last heartbeat; lets the sweeper find stale runners
#: without scanning the keyspace.
RUNNER_LAST_SEEN = "runner:last_seen"
OWNER_PREFIX = "runner:owner:"
#: SHA-256 (hex) of the runnerKey a runnerId is bound to; TTL auth.runner_key_ttl_s.
RUNNER_KEY_PREFIX = "runner:key:"
CODE_PREFIX = "pairing:code:"
RUNNER_CODE_PREFIX = "pairing:runner_code:"
RATE_LIMIT_PREFIX = "ratelimit:"
#: Cluster layout only: per runner, a hash appSessionId -> pairing token, beside the runner's
#: apps set; and per app, the set of tokens a remover has cancelled (see docs/architecture.md,
#: "Pairing on a Redis Cluster").
APP_TOKENS_PREFIX = "pairing:app_tokens:"
FENCE_PREFIX = "pairing:fence:"
HISTORY_STREAM = "pairing:history"
#: Hash replicaId -> JSON report (health, counts), for the operator console.
REPLICAS = "gateway:replicas"
#: Per replica, a hash runnerId -> epoch ms since which that runner is connected there
#: (``gateway:replica_runners:<replicaId>``, TTL a few report intervals), for the console.
REPLICA_RUNNERS_PREFIX = "gateway:replica_runners:"


def replica_runners(replica_id: str) -> str:
    return REPLICA_RUNNERS_PREFIX + replica_id


SWEEPER_LOCK = "gateway:sweeper:lock"
#: Pub/sub channel prefix for cross-replica delivery; one channel per room. Single node:
#: ``gateway:room:<room>`` (``PUBLISH``); cluster: ``gateway:room:<kind>:{<id>}``, a sharded
#: channel (``SPUBLISH``) in the slot of the room's app or runner (``ClusterKeyLayout``).
ROOM_CHANNEL_PREFIX = "gateway:room:"
#: Cluster layout only: ``runner:last_seen_mark:{runnerId}`` exists (TTL half the heartbeat
#: timeout) while the runner's ``runner:last_seen`` entry is recent, so a heartbeat writes
#: the index shard (another slot, another round trip) only when the mark has expired: about
#: every other beat instead of every beat. The index is a hint the sweeper verifies against
#: the heartbeat key, so an entry up to half a timeout old loses nothing.
LAST_SEEN_MARK_PREFIX = "runner:last_seen_mark:"
#: Connection state recovery: ``socketio:pid:{<sha256 of the pid>}``, what a Socket.IO
#: private session id names (``pairing.recovery``). The pid itself is never stored.
RECOVERY_PID_PREFIX = "socketio:pid:"


def session(app_session_id: str) -> str:
    return SESSION_PREFIX + app_session_id


def runner_apps(runner_id: str) -> str:
    return RUNNER_APPS_PREFIX + runner_id


def heartbeat(runner_id: str) -> str:
    return HEARTBEAT_PREFIX + runner_id


def owner(runner_id: str) -> str:
    return OWNER_PREFIX + runner_id


def runner_key(runner_id: str) -> str:
    return RUNNER_KEY_PREFIX + runner_id


def code(pairing_code: str) -> str:
    """Codes compare case-insensitively, so the key holds the upper-cased form."""
    return CODE_PREFIX + pairing_code.upper()


def runner_code(runner_id: str) -> str:
    return RUNNER_CODE_PREFIX + runner_id


def rate_limit(scope: str, subject: str) -> str:
    return f"{RATE_LIMIT_PREFIX}{scope}:{subject}"


def room_channel(room: str) -> str:
    return ROOM_CHANNEL_PREFIX + room


#: Resume: per appSessionId and direction ("out": terminal:output to the app, "in":
#: terminal:input to its runner) a seq counter, the hold (a list of the newest messages) and
#: the hold's size in bytes. The ``{appSessionId}`` hash tag puts all of one app's keys, and
#: its session key in the cluster layout, in one Redis Cluster slot.
RESUME_PREFIX = "resume:"
DIRECTIONS = ("out", "in")


def resume_seq(app_session_id: str, direction: str) -> str:
    return f"{RESUME_PREFIX}{{{app_session_id}}}:{direction}:seq"


def resume_hold(app_session_id: str, direction: str) -> str:
    return f"{RESUME_PREFIX}{{{app_session_id}}}:{direction}:hold"


def resume_bytes(app_session_id: str, direction: str) -> str:
    return f"{RESUME_PREFIX}{{{app_session_id}}}:{direction}:bytes"


def resume_keys(app_session_id: str, direction: str) -> list[str]:
    """Seq counter, hold and hold size of one app and direction, in the scripts' order."""
    return [
        resume_seq(app_session_id, direction),
        resume_hold(app_session_id, direction),
        resume_bytes(app_session_id, direction),
    ]


def recovery_pid(pid_digest: str) -> str:
    """The record of a pid, by the hex SHA-256 of the pid (a hash tag in both layouts)."""
    return f"{RECOVERY_PID_PREFIX}{{{pid_digest}}}"


# --- Layouts: the same families, spelled for one Redis or for a Redis Cluster -----------------


class KeyLayout:
    """Key names for one deployment shape; ``layout_for(redis_url)`` picks one.

    The single-node layout is the functions above, unchanged. The cluster layout puts a
    hash tag in every key so that each script's keys share a slot: per-runner keys are
    tagged ``{<runnerId>}``, per-app keys ``{<appSessionId>}``, exactly as the pairing
    session service's three key families print their braces. Keys every replica shares (the
    sweeper's index, its locks, the history) are split into ``SHARDS`` keys whose tags are
    spread evenly over the 16384 slots, so none of them is one hot slot on one master.

    Room channels follow the same rule: in the cluster layout a room's channel carries the
    room's app or runner id as its hash tag (``gateway:room:app:{<appSessionId>}``,
    ``gateway:room:runner:{<runnerId>}``) and is a sharded channel, published with
    ``publish_command`` (``SPUBLISH``) and read with ``SSUBSCRIBE`` on the master owning that
    slot; the single-node layout keeps ``gateway:room:<room>`` and ``PUBLISH``.
    """

    cluster: bool = False
    #: How a room channel is published to, from a script or a client.
    publish_command: str = "PUBLISH"

    def session(self, app_session_id: str) -> str:
        return session(app_session_id)

    def runner_apps(self, runner_id: str) -> str:
        return runner_apps(runner_id)

    def heartbeat(self, runner_id: str) -> str:
        return heartbeat(runner_id)

    def owner(self, runner_id: str) -> str:
        return owner(runner_id)

    def runner_key(self, runner_id: str) -> str:
        return runner_key(runner_id)

    def code(self, pairing_code: str) -> str:
        return code(pairing_code)

    def runner_code(self, runner_id: str) -> str:
        return runner_code(runner_id)

    def rate_limit(self, scope: str, subject: str) -> str:
        return rate_limit(scope, subject)

    def app_tokens(self, runner_id: str) -> str:
        """Pairing tokens of a runner's apps (used by the cluster's multi-step pairing)."""
        return APP_TOKENS_PREFIX + runner_id

    def fence(self, app_session_id: str) -> str:
        """Cancelled pairing tokens of an app (used by the cluster's multi-step pairing)."""
        return FENCE_PREFIX + app_session_id

    def room_channel(self, room: str) -> str:
        return room_channel(room)

    def last_seen_mark(self, runner_id: str) -> str:
        """Cluster only: set while the runner's index entry is fresh enough (see
        ``LAST_SEEN_MARK_PREFIX``); the single-node heartbeat writes the index every time."""
        return LAST_SEEN_MARK_PREFIX + runner_id

    def last_seen(self, runner_id: str) -> str:
        """The sweeper's index shard holding ``runner_id``."""
        return RUNNER_LAST_SEEN

    def last_seen_shards(self) -> tuple[str, ...]:
        return (RUNNER_LAST_SEEN,)

    def history(self, app_session_id: str) -> str:
        """The history stream an app's entries go to."""
        return HISTORY_STREAM

    def history_shards(self) -> tuple[str, ...]:
        return (HISTORY_STREAM,)

    def sweeper_lock(self, shard: int = 0) -> str:
        return SWEEPER_LOCK

    # An app's resume keys carry its hash tag in both layouts.
    def resume_seq(self, app_session_id: str, direction: str) -> str:
        return resume_seq(app_session_id, direction)

    def resume_hold(self, app_session_id: str, direction: str) -> str:
        return resume_hold(app_session_id, direction)

    def resume_bytes(self, app_session_id: str, direction: str) -> str:
        return resume_bytes(app_session_id, direction)

    def recovery_pid(self, pid_digest: str) -> str:
        return recovery_pid(pid_digest)


class ClusterKeyLayout(KeyLayout):
    """Hash-tagged keys for Redis Cluster (see ``KeyLayout``)."""

    cluster = True
    publish_command = "SPUBLISH"

    def session(self, app_session_id: str) -> str:
        return f"{SESSION_PREFIX}{{{app_session_id}}}"

    def runner_apps(self, runner_id: str) -> str:
        return f"{RUNNER_APPS_PREFIX}{{{runner_id}}}"

    def heartbeat(self, runner_id: str) -> str:
        return f"{HEARTBEAT_PREFIX}{{{runner_id}}}"

    def owner(self, runner_id: str) -> str:
        return f"{OWNER_PREFIX}{{{runner_id}}}"

    def runner_key(self, runner_id: str) -> str:
        return f"{RUNNER_KEY_PREFIX}{{{runner_id}}}"

    def code(self, pairing_code: str) -> str:
        return f"{CODE_PREFIX}{{{pairing_code.upper()}}}"

    def runner_code(self, runner_id: str) -> str:
        return f"{RUNNER_CODE_PREFIX}{{{runner_id}}}"

    def rate_limit(self, scope: str, subject: str) -> str:
        return f"{RATE_LIMIT_PREFIX}{scope}:{{{subject}}}"

    def app_tokens(self, runner_id: str) -> str:
        return f"{APP_TOKENS_PREFIX}{{{runner_id}}}"

    def fence(self, app_session_id: str) -> str:
        return f"{FENCE_PREFIX}{{{app_session_id}}}"

    def room_channel(self, room: str) -> str:
        """``gateway:room:<kind>:{<id>}``: the room's id is the hash tag, so an app's room
        channel (``app:<appSessionId>``) sits in the app's slot and a runner's
        (``runner:<runnerId>``) in the runner's. A relay script running on that slot can then
        ``SPUBLISH`` to it (Redis checks a script's shard channels like its keys), and a
        subscriber finds the channel on the master that owns the room's keys. A room without
        a ``kind:`` part is tagged whole."""
        kind, sep, ident = room.partition(":")
        if not sep:
            return f"{ROOM_CHANNEL_PREFIX}{{{room}}}"
        return f"{ROOM_CHANNEL_PREFIX}{kind}:{{{ident}}}"

    def last_seen_mark(self, runner_id: str) -> str:
        return f"{LAST_SEEN_MARK_PREFIX}{{{runner_id}}}"

    def last_seen(self, runner_id: str) -> str:
        return f"{RUNNER_LAST_SEEN}:{{{_SHARD_TAGS[shard_of(runner_id)]}}}"

    def last_seen_shards(self) -> tuple[str, ...]:
        return tuple(f"{RUNNER_LAST_SEEN}:{{{tag}}}" for tag in _SHARD_TAGS)

    def history(self, app_session_id: str) -> str:
        return f"{HISTORY_STREAM}:{{{_SHARD_TAGS[shard_of(app_session_id)]}}}"

    def history_shards(self) -> tuple[str, ...]:
        return tuple(f"{HISTORY_STREAM}:{{{tag}}}" for tag in _SHARD_TAGS)

    def sweeper_lock(self, shard: int = 0) -> str:
        return f"{SWEEPER_LOCK}:{{{_SHARD_TAGS[shard]}}}"


#: Shared keys are split this many ways in the cluster layout.
SHARDS = 16


def shard_of(subject: str) -> int:
    """Which of the ``SHARDS`` shared-key shards a runner's or an app's entry goes to."""
    return key_slot(subject.encode()) % SHARDS


def _spread_tags(count: int) -> tuple[str, ...]:
    """One short hash tag per shard, shard k's tag hashing into the k-th of ``count`` equal
    slot ranges: the shards sit evenly on the masters however the slots are split."""
    width = 16384 / count
    tags = []
    for k in range(count):
        n = 0
        while not k * width <= key_slot(f"{k}.{n}".encode()) < (k + 1) * width:
            n += 1
        tags.append(f"{k}.{n}")
    return tuple(tags)


_SHARD_TAGS = _spread_tags(SHARDS)

SINGLE_NODE = KeyLayout()
CLUSTER = ClusterKeyLayout()


def layout_for(redis_url: str) -> KeyLayout:
    """The cluster layout for ``redis+cluster://`` and ``rediss+cluster://``, else the
    single-node one (single node, Sentinel, memory://)."""
    return (
        CLUSTER if redis_url.startswith(("redis+cluster://", "rediss+cluster://")) else SINGLE_NODE
    )
