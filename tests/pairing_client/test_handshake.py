"""The handshake's refusals: a wrong secret on either side, shares that are not points."""

from __future__ import annotations

import pytest

from pairing_client.e2e import AppHandshake, HandshakeError, RejectReason, RunnerHandshake
from pairing_client.e2e.frames import FrameType, handshake

APP = "app-0123456789abcdef"
RUNNER = "laptop-1"


def pair(app_secret: str, runner_secret: str) -> tuple[AppHandshake, RunnerHandshake]:
    app = AppHandshake(
        app_session_id=APP, runner_id=RUNNER, secret=app_secret, nameplate="K7M2P9QXRT"
    )
    runner = RunnerHandshake(
        app.hello(),
        app_session_id=APP,
        runner_id=RUNNER,
        secret=runner_secret,
        nameplate="K7M2P9QXRT",
    )
    return app, runner


def test_same_code_agrees_on_keys_and_codes_are_case_insensitive() -> None:
    app, runner = pair("h4x9qtr", "H4X9QTR")
    confirm, keys = runner.on_finish(app.on_response(runner.response))
    assert app.on_confirm(confirm) == keys
    assert keys.app_to_runner != keys.runner_to_app


def test_wrong_secret_fails_confirmation_on_the_runner() -> None:
    app, runner = pair("H4X9QTS", "H4X9QTR")
    with pytest.raises(HandshakeError) as info:
        runner.on_finish(app.on_response(runner.response))
    assert info.value.reason is RejectReason.WRONG_CODE


def test_a_runner_without_the_secret_cannot_confirm_to_the_app() -> None:
    """A gateway that plays the runner with a guessed secret gets one guess, then the app
    refuses its CONFIRM."""
    app = AppHandshake(
        app_session_id=APP, runner_id=RUNNER, secret="H4X9QTR", nameplate="K7M2P9QXRT"
    )
    fake = RunnerHandshake(
        app.hello(), app_session_id=APP, runner_id=RUNNER, secret="AAAAAAA", nameplate="K7M2P9QXRT"
    )
    finish = app.on_response(fake.response)
    with pytest.raises(HandshakeError):
        fake.on_finish(finish)
    with pytest.raises(HandshakeError):
        app.on_confirm(handshake(FrameType.CONFIRM, bytes(64)))


def test_bound_to_both_parties() -> None:
    app = AppHandshake(
        app_session_id=APP, runner_id=RUNNER, secret="H4X9QTR", nameplate="K7M2P9QXRT"
    )
    runner = RunnerHandshake(
        app.hello(),
        app_session_id="another-app-0123456",
        runner_id="laptop-1",
        secret="H4X9QTR",
        nameplate="K7M2P9QXRT",
    )
    with pytest.raises(HandshakeError):
        runner.on_finish(app.on_response(runner.response))


@pytest.mark.parametrize(
    "share",
    [bytes(32), bytes.fromhex("2b3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c")],
)
def test_invalid_shares_abort_on_both_sides(share: bytes) -> None:
    app, runner = pair("H4X9QTR", "H4X9QTR")
    with pytest.raises(HandshakeError):
        app.on_response(handshake(FrameType.RESPONSE, runner.nonce_b + share))
    with pytest.raises(HandshakeError):
        runner.on_finish(handshake(FrameType.FINISH, share + bytes(64)))


def test_rekey_without_the_key_is_unknown_key() -> None:
    app = AppHandshake(
        app_session_id=APP, runner_id=RUNNER, pairing_key=bytes(32), pairing_key_id=bytes(16)
    )
    with pytest.raises(HandshakeError) as info:
        RunnerHandshake(app.hello(), app_session_id=APP, runner_id=RUNNER, pairing_key=None)
    assert info.value.reason is RejectReason.UNKNOWN_KEY
