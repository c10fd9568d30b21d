"""What the services answer: typed results, the same whichever store runs the operation.

Each status enum's values are the words the one-Redis scripts reply with, so a reply maps
onto its status in one lookup; callers compare members, never strings. The gateway maps
each status to its ack (``success`` or an error code from the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pairing.models import PairingSession


@dataclass(frozen=True, slots=True)
class RegisteredCode:
    code: str
    expires_at: int  # epoch ms, by the Redis server's clock


class RedeemStatus(Enum):
    PAIRED = "ok"
    INVALID_CODE = "invalid"
    RUNNER_OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class RedeemResult:
    status: RedeemStatus
    runner_id: str | None = None
    previous_runner_id: str | None = None


class PairStatus(Enum):
    PAIRED = "ok"
    RATE_LIMITED = "limited"
    INVALID_CODE = "invalid"
    RUNNER_OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class PairOutcome:
    status: PairStatus
    runner_id: str | None = None
    previous_runner_id: str | None = None


class RegistrationStatus(Enum):
    REGISTERED = "ok"
    RATE_LIMITED = "limited"
    UNAUTHORIZED = "unauthorized"
    CODE_TAKEN = "taken"


class RefusalReason(Enum):
    """Why a registration was UNAUTHORIZED; also the history entry's ``reason``."""

    BAD_TOKEN = "BAD_TOKEN"  # token does not match auth.runner_secret
    KEY_MISSING = "KEY_MISSING"  # the runnerId is bound, no key presented
    KEY_MISMATCH = "KEY_MISMATCH"  # the runnerId is bound to another key
    KEY_REQUIRED = "KEY_REQUIRED"  # require_key is set and no key presented


@dataclass(frozen=True, slots=True)
class Registration:
    status: RegistrationStatus
    code: str | None = None
    expires_at: int | None = None  # epoch ms, by the Redis server's clock
    #: The connection that owned the runner before (None when none); REGISTERED only.
    previous_owner: str | None = None
    reason: RefusalReason | None = None  # UNAUTHORIZED only


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """An app's pairing (or None) and whether its runner is online, read in one round trip."""

    session: PairingSession | None
    runner_online: bool


@dataclass(frozen=True, slots=True)
class StaleRunner:
    runner_id: str
    unpaired_apps: list[str]
