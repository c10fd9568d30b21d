"""Values stored in Redis, in the seed's JSON shapes."""

from __future__ import annotations

import msgspec


class PairingSession(msgspec.Struct, rename="camel", frozen=True):
    """``pairing:session:{appSessionId}``: encodes to the seed's camelCase JSON."""

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
