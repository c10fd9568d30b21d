"""Domain services for pairing mobile apps with runners, over Redis.

Nothing here knows about Socket.IO: each service takes its Redis client as a constructor
argument and does one round trip per operation.
"""

from pairing.app_pairing import AppPairingService, PairOutcome, PairStatus
from pairing.codes import (
    CODE_ALPHABET,
    CodeTakenError,
    PairingCodeService,
    RedeemResult,
    RedeemStatus,
    RegisteredCode,
)
from pairing.history import HistoryEntry, HistoryEvent, NewEntry, PairingHistoryService
from pairing.models import PairingSession
from pairing.ratelimit import RateLimitService
from pairing.registration import (
    RefusalReason,
    Registration,
    RegistrationStatus,
    RunnerRegistration,
)
from pairing.runners import RunnerRegistry, StaleRunner
from pairing.session import PairingSessionService, SessionStatus
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
