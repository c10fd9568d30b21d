"""Our protocol vectors (tests/support/vectors/e2e-v1.json): this code made them, every other
implementation checks against them; here they are rebuilt and replayed step by step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pysodium
import pytest

from pairing_client.codes import split_code
from pairing_client.e2e import (
    AppHandshake,
    FrameType,
    HandshakeError,
    IntegrityError,
    Opener,
    RejectReason,
    RunnerHandshake,
)
from pairing_client.e2e import vectors as make
from pairing_client.e2e.frames import parse_record

PATH = Path(__file__).resolve().parents[1] / "support" / "vectors" / "e2e-v1.json"
VECTORS: dict[str, Any] = json.loads(PATH.read_text())


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_the_committed_file_is_what_the_code_makes() -> None:
    """Any change to the protocol shows here first: regenerate and say so in the spec."""
    assert make.build() == VECTORS


def test_code_halves() -> None:
    code = VECTORS["code"]
    assert split_code(code["typed"]) == (code["nameplate"], code["secret"])
    assert code["printed"] == f"pairing code: {code['nameplate']}-{code['secret']}"


@pytest.mark.parametrize("name", ["pair", "rekey"])
def test_handshake_replays_from_the_vectors(name: str) -> None:
    v = VECTORS[name]
    inputs = v["inputs"]
    if name == "pair":
        app_kw: dict[str, Any] = {
            "secret": VECTORS["code"]["secret"],
            "nameplate": VECTORS["code"]["nameplate"],
        }
        runner_kw: dict[str, Any] = dict(app_kw)
    else:
        keys = VECTORS["pair"]["keys"]
        app_kw = {
            "pairing_key": h(keys["pairing_key"]),
            "pairing_key_id": h(keys["pairing_key_id"]),
        }
        runner_kw = {"pairing_key": h(keys["pairing_key"])}
    ids = {"app_session_id": VECTORS["app_session_id"], "runner_id": VECTORS["runner_id"]}
    app = AppHandshake(**ids, **app_kw, nonce=h(inputs["nonce_a"]), scalar=h(inputs["ya"]))
    assert app.ci == h(v["CI"])
    assert app.hello() == h(v["frames"]["hello"])
    runner = RunnerHandshake(
        app.hello(), **ids, **runner_kw, nonce=h(inputs["nonce_b"]), scalar=h(inputs["yb"])
    )
    assert runner.response == h(v["frames"]["response"])
    assert app.on_response(runner.response) == h(v["frames"]["finish"])
    confirm, keys_b = runner.on_finish(h(v["frames"]["finish"]))
    assert confirm == h(v["frames"]["confirm"])
    keys_a = app.on_confirm(confirm)
    assert keys_a == keys_b
    assert keys_a.key_id.hex() == v["keys"]["key_id"]
    assert keys_a.app_to_runner.hex() == v["keys"]["app_to_runner"]
    assert keys_a.runner_to_app.hex() == v["keys"]["runner_to_app"]
    assert keys_a.pairing_key.hex() == v["keys"]["pairing_key"]
    assert keys_a.pairing_key_id.hex() == v["keys"]["pairing_key_id"]
    assert v["frames"]["finish"] == "e20103" + v["Ya"] + v["Ta"]
    assert v["frames"]["confirm"] == "e20104" + v["Tb"]


def test_wrong_secret_is_refused_by_the_runner() -> None:
    v = VECTORS["pair"]
    runner = RunnerHandshake(
        h(v["frames"]["hello"]),
        app_session_id=VECTORS["app_session_id"],
        runner_id=VECTORS["runner_id"],
        secret=VECTORS["code"]["secret"],
        nameplate=VECTORS["code"]["nameplate"],
        nonce=h(v["inputs"]["nonce_b"]),
        scalar=h(v["inputs"]["yb"]),
    )
    with pytest.raises(HandshakeError) as info:
        runner.on_finish(h(VECTORS["wrong_secret"]["finish"]))
    assert info.value.reason is RejectReason.WRONG_CODE
    assert VECTORS["wrong_secret"]["runner_answers"] == "e2010501"


def test_records_decrypt_to_their_plaintexts() -> None:
    openers: dict[str, Opener] = {}
    for rec in VECTORS["records"]:
        opener = openers.setdefault(rec["direction"], Opener(h(rec["key"]), h(rec["key_id"])))
        opened = opener.open(h(rec["record"]))
        assert opened.records == [(FrameType(rec["type"]), h(rec["plaintext"]))]
        header, nonce, ct = parse_record(h(rec["record"]))
        assert (header.counter, nonce.hex()) == (rec["counter"], rec["nonce"])
        plain = pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, h(rec["record"])[:19], nonce, h(rec["key"])
        )
        assert plain == h(rec["plaintext"])


@pytest.mark.parametrize("case", VECTORS["refused_records"], ids=lambda c: c["why"])
def test_refused_records(case: dict[str, str]) -> None:
    genuine = VECTORS["records"][3]
    opener = Opener(h(genuine["key"]), h(genuine["key_id"]))
    with pytest.raises(IntegrityError):
        opener.open(h(case["record"]))
    # Nothing was delivered, and the genuine record still opens afterwards.
    assert opener.open(h(genuine["record"])).records == [(FrameType.DATA, h(genuine["plaintext"]))]


def test_xchacha20poly1305_reference_vector() -> None:
    """draft-irtf-cfrg-xchacha-03, A.3.1: the AEAD libsodium gives us is the published one."""
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    aad = h("50515253c0c1c2c3c4c5c6c7")
    key = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
    nonce = h("404142434445464748494a4b4c4d4e4f5051525354555657")
    out = pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    assert out.hex() == (
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )
