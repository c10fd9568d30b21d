"""The E2E handshake: CPace between the app (initiator "a") and the runner (responder "b"),
explicit key confirmation, and the key schedule.

    app                                   runner
    HELLO   nonce_a                  ->
                                     <-   RESPONSE nonce_b || Yb
    FINISH  Ya || Ta                 ->   (checks Ta: one guess; wrong -> REJECT, code burnt)
                                     <-   CONFIRM Tb
    (app checks Tb)

sid = nonce_a || nonce_b. PRS is the code's secret (pairing) or the stored pairing key
(re-key, which starts with REKEY_HELLO nonce_a || pairing_key_id). CI binds the run to this
protocol, the mode, the nameplate (or pairing key id) and both parties, initiator first:
CI = lv_cat("pairing-gateway e2e v1", mode, label, appSessionId, runnerId). ADa = ADb = "".
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from . import cpace, hkdf
from .frames import (
    KEY_ID_BYTES,
    NONCE_BYTES,
    PAIRING_KEY_ID_BYTES,
    SHARE_BYTES,
    FrameType,
    RejectReason,
    handshake,
    handshake_body,
)

LABEL = b"pairing-gateway e2e v1"
MODE_CODE = b"code"
MODE_REKEY = b"rekey"
AD_A = b""
AD_B = b""


class HandshakeError(Exception):
    """The handshake failed; ``reason`` says how (what the REJECT frame carries)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SessionKeys:
    """What a handshake yields: the record keys of this session and the pairing key."""

    key_id: bytes
    app_to_runner: bytes
    runner_to_app: bytes
    pairing_key: bytes
    pairing_key_id: bytes

    def __repr__(self) -> str:  # keys never reach a log
        return f"SessionKeys(key_id={self.key_id.hex()})"


def channel_id(mode: bytes, label: bytes, app_session_id: str, runner_id: str) -> bytes:
    return cpace.lv_cat(LABEL, mode, label, app_session_id.encode(), runner_id.encode())


def derive_keys(isk: bytes, sid: bytes) -> SessionKeys:
    """HKDF-SHA512(salt=sid, ikm=ISK) expanded under one label per key."""
    prk = hkdf.extract(sid, isk)

    def key(name: bytes, length: int) -> bytes:
        return hkdf.expand(prk, LABEL + b" " + name, length)

    return SessionKeys(
        key_id=key(b"key id", KEY_ID_BYTES),
        app_to_runner=key(b"app->runner", 32),
        runner_to_app=key(b"runner->app", 32),
        pairing_key=key(b"pairing key", 32),
        pairing_key_id=key(b"pairing key id", PAIRING_KEY_ID_BYTES),
    )


def reject(reason: RejectReason) -> bytes:
    return handshake(FrameType.REJECT, bytes([reason]))


def reject_reason(frame: bytes) -> RejectReason:
    raw = handshake_body(frame, FrameType.REJECT)[0]
    try:
        return RejectReason(raw)
    except ValueError:
        return RejectReason.WRONG_CODE


class AppHandshake:
    """The app's side: hello(), then on_response() -> FINISH, then on_confirm() -> keys."""

    def __init__(
        self,
        *,
        app_session_id: str,
        runner_id: str,
        secret: str | None = None,
        nameplate: str | None = None,
        pairing_key: bytes | None = None,
        pairing_key_id: bytes | None = None,
        nonce: bytes | None = None,
        scalar: bytes | None = None,
    ) -> None:
        if secret is not None and nameplate is not None:
            self.prs = secret.upper().encode("ascii")
            self.ci = channel_id(
                MODE_CODE, nameplate.upper().encode("ascii"), app_session_id, runner_id
            )
            self.rekey_id: bytes | None = None
        elif pairing_key is not None and pairing_key_id is not None:
            self.prs = pairing_key
            self.ci = channel_id(MODE_REKEY, pairing_key_id, app_session_id, runner_id)
            self.rekey_id = pairing_key_id
        else:
            raise ValueError("a code (secret and nameplate) or a pairing key and its id")
        self.nonce_a = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self._scalar = scalar
        self._finish: bytes | None = None
        self._keys: SessionKeys | None = None
        self._tag_b: bytes | None = None

    @property
    def rekey(self) -> bool:
        return self.rekey_id is not None

    @property
    def finished(self) -> bool:
        """FINISH was made (a repeated RESPONSE gets no second one)."""
        return self._finish is not None

    def hello(self) -> bytes:
        if self.rekey_id is not None:
            return handshake(FrameType.REKEY_HELLO, self.nonce_a + self.rekey_id)
        return handshake(FrameType.HELLO, self.nonce_a)

    def on_response(self, frame: bytes) -> bytes:
        """FINISH for the runner's RESPONSE (the same FINISH again for a repeated one)."""
        body = handshake_body(frame, FrameType.RESPONSE)
        nonce_b, yb = body[:NONCE_BYTES], body[NONCE_BYTES:]
        if self._finish is not None:
            return self._finish
        sid = self.nonce_a + nonce_b
        g = cpace.calculate_generator(self.prs, self.ci, sid)
        ya_scalar = self._scalar if self._scalar is not None else cpace.sample_scalar()
        ya = cpace.scalar_mult(ya_scalar, g)
        try:
            isk = cpace.shared_isk(ya_scalar, yb, sid, ya, AD_A, yb, AD_B)
        except cpace.CPaceError as exc:
            raise HandshakeError(RejectReason.WRONG_CODE, str(exc)) from None
        mk = cpace.mac_key(sid, isk)
        self._keys = derive_keys(isk, sid)
        self._tag_b = cpace.confirmation_tag(mk, yb, AD_B)
        self._finish = handshake(FrameType.FINISH, ya + cpace.confirmation_tag(mk, ya, AD_A))
        return self._finish

    def on_confirm(self, frame: bytes) -> SessionKeys:
        tag = handshake_body(frame, FrameType.CONFIRM)
        if self._keys is None or self._tag_b is None:
            raise HandshakeError(RejectReason.WRONG_CODE, "CONFIRM before RESPONSE")
        if not hmac.compare_digest(tag, self._tag_b):
            raise HandshakeError(RejectReason.WRONG_CODE, "the runner's key confirmation failed")
        return self._keys


class RunnerHandshake:
    """The runner's side for one app: on_hello() -> RESPONSE, on_finish() -> (CONFIRM, keys).

    A FINISH whose tag is wrong raises HandshakeError(WRONG_CODE): the caller burns the code.
    """

    def __init__(
        self,
        hello: bytes,
        *,
        app_session_id: str,
        runner_id: str,
        secret: str | None = None,
        nameplate: str | None = None,
        pairing_key: bytes | None = None,
        nonce: bytes | None = None,
        scalar: bytes | None = None,
    ) -> None:
        kind = FrameType(hello[2]) if len(hello) > 2 else None
        if kind is FrameType.REKEY_HELLO:
            body = handshake_body(hello, FrameType.REKEY_HELLO)
            self.nonce_a, key_id = body[:NONCE_BYTES], body[NONCE_BYTES:]
            if pairing_key is None:
                raise HandshakeError(RejectReason.UNKNOWN_KEY, "no pairing key for this app")
            self.prs = pairing_key
            self.ci = channel_id(MODE_REKEY, key_id, app_session_id, runner_id)
        else:
            self.nonce_a = handshake_body(hello, FrameType.HELLO)
            if secret is None or nameplate is None:
                raise HandshakeError(RejectReason.WRONG_CODE, "no unspent code")
            self.prs = secret.upper().encode("ascii")
            self.ci = channel_id(
                MODE_CODE, nameplate.upper().encode("ascii"), app_session_id, runner_id
            )
        self.hello = bytes(hello)
        self.nonce_b = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self.sid = self.nonce_a + self.nonce_b
        g = cpace.calculate_generator(self.prs, self.ci, self.sid)
        self._scalar = scalar if scalar is not None else cpace.sample_scalar()
        self.yb = cpace.scalar_mult(self._scalar, g)
        self.response = handshake(FrameType.RESPONSE, self.nonce_b + self.yb)

    def on_finish(self, frame: bytes) -> tuple[bytes, SessionKeys]:
        body = handshake_body(frame, FrameType.FINISH)
        ya, tag_a = body[:SHARE_BYTES], body[SHARE_BYTES:]
        try:
            isk = cpace.shared_isk(self._scalar, ya, self.sid, ya, AD_A, self.yb, AD_B)
        except cpace.CPaceError as exc:
            raise HandshakeError(RejectReason.WRONG_CODE, str(exc)) from None
        mk = cpace.mac_key(self.sid, isk)
        if not hmac.compare_digest(tag_a, cpace.confirmation_tag(mk, ya, AD_A)):
            raise HandshakeError(RejectReason.WRONG_CODE, "the app's key confirmation failed")
        confirm = handshake(FrameType.CONFIRM, cpace.confirmation_tag(mk, self.yb, AD_B))
        return confirm, derive_keys(isk, self.sid)
