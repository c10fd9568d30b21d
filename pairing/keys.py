"""The whole Redis key layout in one place.

The first three families are the seed's (binding, see ``../shared/contract.md``); the rest are
additions the gateway needs. Nothing else in the project spells a key.
"""

from __future__ import annotations

SESSION_PREFIX = "pairing:session:"
RUNNER_APPS_PREFIX = "pairing:apps:"
HEARTBEAT_PREFIX = "runner:heartbeat:"

#: Sorted set runnerId -> epoch ms of its last heartbeat; lets the sweeper find stale runners
#: without scanning the keyspace.
RUNNER_LAST_SEEN = "runner:last_seen"
OWNER_PREFIX = "runner:owner:"
CODE_PREFIX = "pairing:code:"
RUNNER_CODE_PREFIX = "pairing:runner_code:"
RATE_LIMIT_PREFIX = "ratelimit:"
HISTORY_STREAM = "pairing:history"
SWEEPER_LOCK = "gateway:sweeper:lock"
#: Pub/sub channel prefix for cross-replica delivery; one channel per room.
ROOM_CHANNEL_PREFIX = "gateway:room:"


def session(app_session_id: str) -> str:
    return SESSION_PREFIX + app_session_id


def runner_apps(runner_id: str) -> str:
    return RUNNER_APPS_PREFIX + runner_id


def heartbeat(runner_id: str) -> str:
    return HEARTBEAT_PREFIX + runner_id


def owner(runner_id: str) -> str:
    return OWNER_PREFIX + runner_id


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
