"""Domain services for pairing mobile apps with runners, over Redis.

Nothing here knows about Socket.IO: each service takes its Redis client as a constructor
argument and does one round trip per operation on one Redis (a few single-slot steps on a
Redis Cluster: ``pairing.cluster``).
"""

from pairing.app_pairing import AppPairingService
from pairing.codes import CODE_ALPHABET, CodeTakenError, PairingCodeService
from pairing.history import HistoryEntry, HistoryEvent, NewEntry, PairingHistoryService
from pairing.models import PairingSession
from pairing.ratelimit import RateLimitService
from pairing.registration import RunnerRegistration
from pairing.results import (
    PairOutcome,
    PairStatus,
    RedeemResult,
    RedeemStatus,
    RefusalReason,
    RegisteredCode,
    Registration,
    RegistrationStatus,
    SessionStatus,
    StaleRunner,
)
from pairing.runners import RunnerRegistry
from pairing.session import PairingSessionService
from pairing.store import connect

__all__ = [
    "CODE_ALPHABET",
    "AppPairingService",
    "CodeTakenError",
    "HistoryEntry",
    "HistoryEvent",
    "NewEntry",
    "PairOutcome",
    "PairStatus",
    "PairingCodeService",
    "PairingHistoryService",
    "PairingSession",
    "PairingSessionService",
    "RateLimitService",
    "RedeemResult",
    "RedeemStatus",
    "RefusalReason",
    "RegisteredCode",
    "Registration",
    "RegistrationStatus",
    "RunnerRegistration",
    "RunnerRegistry",
    "SessionStatus",
    "StaleRunner",
    "connect",
]
