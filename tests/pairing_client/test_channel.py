"""Two channels back to back, as the app and runner libraries drive them."""

from __future__ import annotations

from pairing_client.e2e import RejectReason
from pairing_client.e2e.channel import AppChannel, CodeBook, Received, RunnerChannel

APP = "app-0123456789abcdef"
RUNNER = "laptop-1"


class Pipe:
    """Frames each side sent, delivered on demand (the relay)."""

    def __init__(self, nameplate: str = "K7M2P9QXRT", secret: str = "H4X9QTR") -> None:
        self.to_runner: list[bytes] = []
        self.to_app: list[bytes] = []
        self.codes = CodeBook()
        self.codes.issue(nameplate, secret)
        self.keys: dict[bytes, bytes] = {}
        self.app = AppChannel(self.to_runner.append, app_session_id=APP, runner_id=RUNNER)
        self.runner = self.new_runner_channel()

    def new_runner_channel(self, app: str = APP) -> RunnerChannel:
        return RunnerChannel(
            self.to_app.append,
            app_session_id=app,
            runner_id=RUNNER,
            codes=self.codes,
            pairing_key=self.keys.get,
        )

    def flush(self) -> tuple[list[Received], list[Received]]:
        at_app: list[Received] = []
        at_runner: list[Received] = []
        while self.to_runner or self.to_app:
            while self.to_runner:
                at_runner.append(self.runner.receive(self.to_runner.pop(0)))
            while self.to_app:
                at_app.append(self.app.receive(self.to_app.pop(0)))
        return at_app, at_runner


def test_pair_then_records_both_ways_in_order() -> None:
    pipe = Pipe()
    pipe.app.send_data(b"typed before the handshake finished\r")
    pipe.app.start(nameplate="K7M2P9QXRT", secret="h4x9qtr")
    at_app, at_runner = pipe.flush()
    assert any(r.confirmed for r in at_app) and any(r.confirmed for r in at_runner)
    assert [d for r in at_runner for d in r.data] == [b"typed before the handshake finished\r"]
    pipe.app.send_resize(120, 40)
    pipe.runner.send_data(b"out-1")
    pipe.runner.send_control({"exit": 0})
    at_app, at_runner = pipe.flush()
    assert [s for r in at_runner for s in r.resizes] == [(120, 40)]
    assert [d for r in at_app for d in r.data] == [b"out-1"]
    assert [c for r in at_app for c in r.controls] == [{"exit": 0}]
    assert pipe.codes.secret is None  # spent by the pairing


def test_wrong_secret_burns_the_code_and_refuses_the_app() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTS")
    at_app, at_runner = pipe.flush()
    assert any(r.burnt for r in at_runner)
    assert at_app[-1].rejected is RejectReason.WRONG_CODE
    assert pipe.codes.secret is None
    # The same app, now with the right secret: refused without an answer.
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    at_app, at_runner = pipe.flush()
    assert at_app == [] and not any(r.confirmed for r in at_runner)


def test_one_guess_in_total_across_apps() -> None:
    """A gateway that invents a second app still gets one key confirmation per code."""
    pipe = Pipe()
    second_sent: list[bytes] = []
    second = AppChannel(second_sent.append, app_session_id="app-intruder-000000", runner_id=RUNNER)
    second_runner = RunnerChannel(
        pipe.to_app.append,
        app_session_id="app-intruder-000000",
        runner_id=RUNNER,
        codes=pipe.codes,
        pairing_key=pipe.keys.get,
    )
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    second.start(nameplate="K7M2P9QXRT", secret="AAAAAAA")
    second_runner.receive(second_sent.pop(0))  # RESPONSE for the intruder
    pipe.runner.receive(pipe.to_runner.pop(0))  # RESPONSE for the app
    response_to_intruder = pipe.to_app.pop(0)
    second.receive(response_to_intruder)
    burnt = second_runner.receive(second_sent.pop(0))  # the intruder's FINISH: the one guess
    assert burnt.burnt and burnt.rejected is RejectReason.WRONG_CODE
    at_app, at_runner = pipe.flush()  # the genuine app's FINISH comes too late
    assert not any(r.confirmed for r in at_runner)
    assert at_app[-1].rejected is RejectReason.WRONG_CODE


def test_resent_handshake_frames_are_answered_once() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    hello = pipe.to_runner[0]
    pipe.runner.receive(hello)
    pipe.runner.receive(hello)
    assert len(pipe.to_app) == 1
    pipe.to_runner.clear()
    finish_holder: list[bytes] = []
    pipe.app.receive(pipe.to_app.pop(0))
    finish_holder.append(pipe.to_runner[0])
    pipe.flush()
    assert pipe.runner.open and pipe.app.open
    assert pipe.runner.receive(finish_holder[0]) == Received()
    assert pipe.to_app == []


def test_a_repeated_response_gets_no_second_finish() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    pipe.runner.receive(pipe.to_runner.pop(0))
    response = pipe.to_app.pop(0)
    pipe.app.receive(response)
    pipe.app.receive(response)
    assert len(pipe.to_runner) == 1


def test_rekey_from_the_stored_pairing_key() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    pipe.flush()
    keys = pipe.app.keys
    assert keys is not None
    pipe.keys[keys.pairing_key_id] = keys.pairing_key
    # The app process restarts: a new channel, the stored key; the runner's channel too.
    pipe.app = AppChannel(pipe.to_runner.append, app_session_id=APP, runner_id=RUNNER)
    pipe.runner = pipe.new_runner_channel()
    pipe.app.start_rekey(pairing_key=keys.pairing_key, pairing_key_id=keys.pairing_key_id)
    pipe.app.send_data(b"after restart")
    at_app, at_runner = pipe.flush()
    assert any(r.confirmed for r in at_app)
    assert [d for r in at_runner for d in r.data] == [b"after restart"]
    new = pipe.app.keys
    assert new is not None and new.key_id != keys.key_id


def test_rekey_with_an_unknown_key() -> None:
    pipe = Pipe()
    pipe.app.start_rekey(pairing_key=bytes(32), pairing_key_id=bytes(16))
    at_app, _ = pipe.flush()
    assert at_app[-1].rejected is RejectReason.UNKNOWN_KEY


def test_a_tampered_record_is_reported_not_delivered() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    pipe.flush()
    pipe.runner.send_data(b"E2E-864192-MARK")
    frame = bytearray(pipe.to_app.pop(0))
    frame[-20] ^= 0x40
    got = pipe.app.receive(bytes(frame))
    assert got.integrity and got.data == []


def test_records_for_no_session_ask_for_a_rekey_once() -> None:
    pipe = Pipe()
    pipe.app.start(nameplate="K7M2P9QXRT", secret="H4X9QTR")
    pipe.flush()
    pipe.runner = pipe.new_runner_channel()  # the runner lost its session
    pipe.app.send_data(b"a")
    pipe.app.send_data(b"b")
    at_app, _ = pipe.flush()
    assert [r.rejected for r in at_app] == [RejectReason.NO_SESSION]
