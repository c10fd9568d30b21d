"""End-to-end encryption between an app and a runner over the gateway's relay."""

from .frames import FrameError, FrameType, RejectReason, is_e2e
from .handshake import AppHandshake, HandshakeError, RunnerHandshake, SessionKeys
from .records import IntegrityError, Opened, Opener, Sealer, UnknownKeyError

__all__ = [
    "AppHandshake",
    "FrameError",
    "FrameType",
    "HandshakeError",
    "IntegrityError",
    "Opened",
    "Opener",
    "RejectReason",
    "RunnerHandshake",
    "Sealer",
    "SessionKeys",
    "UnknownKeyError",
    "is_e2e",
]
