"""Values stored in Redis, in the JSON shapes of the original pairing design."""

from __future__ import annotations

import msgspec


class PairingSession(msgspec.Struct, rename="camel", frozen=True):
    """``pairing:session:{appSessionId}``: encodes to camelCase JSON (``appSessionId``, ...)."""

    app_session_id: str
    runner_id: str
    paired_at: int
    is_active: bool = True


_decoder = msgspec.json.Decoder(PairingSession)
_encoder = msgspec.json.Encoder()


def decode_session(raw: bytes | str) -> PairingSession:
    return _decoder.decode(raw)


def encode_session(session: PairingSession) -> bytes:
    return _encoder.encode(session)


def session_runner(raw: bytes | str | None) -> str | None:
    """The runnerId a stored session names; None when absent or not a session. The rule of
    the scripts' ``session_runner`` (``pairing.scripts.SESSION_RUNNER``): any JSON object
    whose ``runnerId`` is a string."""
    if raw is None:
        return None
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    runner = decoded.get("runnerId") if isinstance(decoded, dict) else None
    return runner if isinstance(runner, str) else None
