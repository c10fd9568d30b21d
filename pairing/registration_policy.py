"""What a runner registration enforces, in the store's units: the one value that
``RunnerRegistration`` hands to whichever backend (one Redis, cluster) it picked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegistrationPolicy:
    """TTLs in ms; the per-address limit of ``limit`` registrations per ``window_ms``."""

    code_ttl_ms: int
    heartbeat_ttl_ms: int
    key_ttl_ms: int
    require_key: bool
    limit: int
    window_ms: int
    history_max_len: int
    #: How long a heartbeat may skip the index shard (``keys.LAST_SEEN_MARK_PREFIX``); the
    #: cluster's registration writes the mark, one Redis's script does not need it.
    mark_ttl_ms: int
