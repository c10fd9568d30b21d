"""Our protocol's test vectors (tests/support/vectors/e2e-v1.json), made with fixed nonces and
scalars by this package's own functions, for every implementation to check against:

    python -m pairing_client.e2e.vectors > tests/support/vectors/e2e-v1.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from . import cpace
from .frames import FrameType, RejectReason
from .handshake import (
    MODE_CODE,
    MODE_REKEY,
    AppHandshake,
    RunnerHandshake,
    SessionKeys,
    channel_id,
    reject,
)
from .records import Sealer

APP_SESSION_ID = "app-0123456789abcdef"
RUNNER_ID = "laptop-1"
NAMEPLATE = "K7M2P9QXRT"
SECRET = "H4X9QTR"
WRONG_SECRET = "H4X9QTS"


def fixed(label: str, length: int) -> bytes:
    return hashlib.sha512(b"e2e-v1 vectors " + label.encode()).digest()[:length]


def scalar(label: str) -> bytes:
    raw = bytearray(fixed(label, 32))
    raw[31] &= 0x0F
    return bytes(raw)


def keys_json(keys: SessionKeys) -> dict[str, str]:
    return {
        "key_id": keys.key_id.hex(),
        "app_to_runner": keys.app_to_runner.hex(),
        "runner_to_app": keys.runner_to_app.hex(),
        "pairing_key": keys.pairing_key.hex(),
        "pairing_key_id": keys.pairing_key_id.hex(),
    }


def run(prefix: str, app: AppHandshake, runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    hello = app.hello()
    nonce_b, yb_scalar = fixed(prefix + " nonce_b", 16), scalar(prefix + " yb")
    runner = RunnerHandshake(
        hello,
        app_session_id=APP_SESSION_ID,
        runner_id=RUNNER_ID,
        nonce=nonce_b,
        scalar=yb_scalar,
        **runner_kwargs,
    )
    finish = app.on_response(runner.response)
    confirm, keys = runner.on_finish(finish)
    assert app.on_confirm(confirm) == keys
    sid = app.nonce_a + nonce_b
    ya = finish[3:35]
    g = cpace.calculate_generator(app.prs, app.ci, sid)
    k = cpace.scalar_mult_vfy(yb_scalar, ya)
    isk = cpace.isk_ir(sid, k, ya, b"", runner.yb, b"")
    mk = cpace.mac_key(sid, isk)
    return {
        "inputs": {
            "nonce_a": app.nonce_a.hex(),
            "nonce_b": nonce_b.hex(),
            "ya": scalar(prefix + " ya").hex(),
            "yb": yb_scalar.hex(),
            "ADa": "",
            "ADb": "",
        },
        "PRS": app.prs.hex(),
        "CI": app.ci.hex(),
        "sid": sid.hex(),
        "generator_string": cpace.generator_string(cpace.DSI, app.prs, app.ci, sid, 128).hex(),
        "g": g.hex(),
        "Ya": ya.hex(),
        "Yb": runner.yb.hex(),
        "K": k.hex(),
        "ISK": isk.hex(),
        "mac_key": mk.hex(),
        "Ta": finish[35:].hex(),
        "Tb": confirm[3:].hex(),
        "frames": {
            "hello": hello.hex(),
            "response": runner.response.hex(),
            "finish": finish.hex(),
            "confirm": confirm.hex(),
        },
        "keys": keys_json(keys),
    }


def records(keys: SessionKeys) -> list[dict[str, Any]]:
    out = []
    cases: list[tuple[str, FrameType, bytes]] = [
        ("app_to_runner", FrameType.DATA, b"printf 'E2E-%s-MARK\\n' $((123456*7))\r"),
        ("app_to_runner", FrameType.RESIZE, b'{"cols":120,"rows":40}'),
        ("app_to_runner", FrameType.DATA, b""),
        ("runner_to_app", FrameType.DATA, "E2E-864192-MARK\r\n\u00e9\u2500".encode()),
        ("runner_to_app", FrameType.CONTROL, b'{"exit":0}'),
    ]
    sealers = {
        "app_to_runner": Sealer(keys.app_to_runner, keys.key_id),
        "runner_to_app": Sealer(keys.runner_to_app, keys.key_id),
    }
    for i, (direction, kind, plain) in enumerate(cases):
        nonce = fixed(f"record nonce {i}", 24)
        sealer = sealers[direction]
        record = sealer.seal(kind, plain, nonce)
        out.append(
            {
                "direction": direction,
                "key": getattr(keys, direction).hex(),
                "key_id": keys.key_id.hex(),
                "counter": sealer.counter,
                "type": int(kind),
                "nonce": nonce.hex(),
                "plaintext": plain.hex(),
                "record": record.hex(),
            }
        )
    return out


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[index] ^= mask
    return bytes(b)


def build() -> dict[str, Any]:
    pair_app = AppHandshake(
        app_session_id=APP_SESSION_ID,
        runner_id=RUNNER_ID,
        secret=SECRET,
        nameplate=NAMEPLATE,
        nonce=fixed("pair nonce_a", 16),
        scalar=scalar("pair ya"),
    )
    pair = run("pair", pair_app, {"secret": SECRET, "nameplate": NAMEPLATE})
    pair_keys = SessionKeys(**{k: bytes.fromhex(v) for k, v in pair["keys"].items()})

    wrong_app = AppHandshake(
        app_session_id=APP_SESSION_ID,
        runner_id=RUNNER_ID,
        secret=WRONG_SECRET,
        nameplate=NAMEPLATE,
        nonce=fixed("pair nonce_a", 16),
        scalar=scalar("pair ya"),
    )
    wrong_runner = RunnerHandshake(
        wrong_app.hello(),
        app_session_id=APP_SESSION_ID,
        runner_id=RUNNER_ID,
        secret=SECRET,
        nameplate=NAMEPLATE,
        nonce=fixed("pair nonce_b", 16),
        scalar=scalar("pair yb"),
    )
    wrong_finish = wrong_app.on_response(wrong_runner.response)

    rekey_app = AppHandshake(
        app_session_id=APP_SESSION_ID,
        runner_id=RUNNER_ID,
        pairing_key=pair_keys.pairing_key,
        pairing_key_id=pair_keys.pairing_key_id,
        nonce=fixed("rekey nonce_a", 16),
        scalar=scalar("rekey ya"),
    )
    rekey = run("rekey", rekey_app, {"pairing_key": pair_keys.pairing_key})
    recs = records(pair_keys)
    first = bytes.fromhex(recs[3]["record"])
    return {
        "description": (
            "E2E protocol v1 (docs/protocol.md, End-to-end encryption): a pairing with the code "
            "below, the same exchange with a wrong secret, a re-key from the stored pairing key, "
            "records under the pairing's keys, and records a receiver must refuse. Hex strings; "
            "inputs.ya/yb are the scalars (little-endian), nonce_a/nonce_b the handshake nonces."
        ),
        "app_session_id": APP_SESSION_ID,
        "runner_id": RUNNER_ID,
        "code": {
            "nameplate": NAMEPLATE,
            "secret": SECRET,
            "printed": f"pairing code: {NAMEPLATE}-{SECRET}",
            "typed": f" {NAMEPLATE.lower()}-{SECRET.lower()}\n",
        },
        "ci_examples": {
            "code": channel_id(MODE_CODE, NAMEPLATE.encode(), APP_SESSION_ID, RUNNER_ID).hex(),
            "rekey": channel_id(
                MODE_REKEY, pair_keys.pairing_key_id, APP_SESSION_ID, RUNNER_ID
            ).hex(),
        },
        "pair": pair,
        "wrong_secret": {
            "secret": WRONG_SECRET,
            "finish": wrong_finish.hex(),
            "runner_answers": reject(RejectReason.WRONG_CODE).hex(),
        },
        "rekey": rekey,
        "records": recs,
        "refused_records": [
            {"why": "a ciphertext byte flipped", "record": flip(first, 19 + 24 + 2).hex()},
            {"why": "a tag byte flipped", "record": flip(first, len(first) - 1).hex()},
            {
                "why": "the counter in the header changed (1 -> 3)",
                "record": flip(first, 18, 0x02).hex(),
            },
            {"why": "the type in the header changed", "record": flip(first, 2).hex()},
            {"why": "a nonce byte flipped", "record": flip(first, 19).hex()},
        ],
        "reject_frames": {r.name: reject(r).hex() for r in RejectReason},
    }


def main() -> None:
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
