"""CPace against the draft's own vectors (tests/support/vectors/cpace-ristretto255.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pairing_client.e2e import cpace

VECTORS: dict[str, Any] = json.loads(
    (
        Path(__file__).resolve().parents[1] / "support" / "vectors" / "cpace-ristretto255.json"
    ).read_text()
)


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_prepend_len() -> None:
    v = VECTORS["prepend_len"]
    assert cpace.prepend_len(b"").hex().upper() == v["prepend_len(b'')"]
    assert cpace.prepend_len(b"1234").hex().upper() == v["prepend_len(b'1234')"]
    assert cpace.prepend_len(bytes(range(127))).hex().upper() == v["prepend_len(bytes(range(127)))"]
    assert cpace.prepend_len(bytes(range(128))).hex().upper() == v["prepend_len(bytes(range(128)))"]


def test_lv_cat_and_transcripts() -> None:
    assert (
        cpace.lv_cat(b"1234", b"5", b"", b"678").hex().upper()
        == VECTORS["lv_cat"]["lv_cat(b'1234',b'5',b'',b'678')"]
    )
    t = VECTORS["transcript_ir"]
    assert (
        cpace.transcript_ir(b"123", b"PartyA", b"234", b"PartyB").hex().upper()
        == t["transcript_ir(b'123',b'PartyA',b'234',b'PartyB')"]
    )
    assert (
        cpace.transcript_ir(b"3456", b"PartyA", b"2345", b"PartyB").hex().upper()
        == t["transcript_ir(b'3456',b'PartyA',b'2345',b'PartyB')"]
    )


def test_generator() -> None:
    v = VECTORS["calculate_generator"]
    gen = cpace.generator_string(cpace.DSI, h(v["PRS"]), h(v["CI"]), h(v["sid"]), 128)
    assert h(v["DSI"]) == cpace.DSI
    assert gen == h(v["generator_string(G.DSI,PRS,CI,sid,H.s_in_bytes)"])
    assert cpace.calculate_generator(h(v["PRS"]), h(v["CI"]), h(v["sid"])) == h(
        v["encoded generator g"]
    )


def test_full_exchange() -> None:
    v = VECTORS["cpace"]
    g = cpace.calculate_generator(h(v["PRS"]), h(v["CI"]), h(v["sid"]))
    assert g == h(v["g"])
    ya = cpace.scalar_mult(h(v["ya"]), g)
    yb = cpace.scalar_mult(h(v["yb"]), g)
    assert ya == h(v["Ya"])
    assert yb == h(v["Yb"])
    k_a = cpace.scalar_mult_vfy(h(v["ya"]), yb)
    k_b = cpace.scalar_mult_vfy(h(v["yb"]), ya)
    assert k_a == k_b == h(v["K"])
    isk = cpace.isk_ir(h(v["sid"]), k_a, ya, h(v["ADa"]), yb, h(v["ADb"]))
    assert isk == h(v["ISK_IR"])
    # shared_isk is what the handshake calls: the same ISK from either side.
    assert cpace.shared_isk(h(v["ya"]), yb, h(v["sid"]), ya, h(v["ADa"]), yb, h(v["ADb"])) == isk
    assert cpace.shared_isk(h(v["yb"]), ya, h(v["sid"]), ya, h(v["ADa"]), yb, h(v["ADb"])) == isk


def test_scalar_mult_vfy_valid() -> None:
    v = VECTORS["scalar_mult_vfy"]["Valid"]
    assert cpace.scalar_mult_vfy(h(v["s"]), h(v["X"])) == h(v["G.scalar_mult_vfy(s,X)"])


@pytest.mark.parametrize("name", ["Invalid Y1", "Invalid Y2"])
def test_invalid_points_give_the_identity_and_abort(name: str) -> None:
    v = VECTORS["scalar_mult_vfy"]
    s, bad = h(v["Valid"]["s"]), h(v[name])
    assert cpace.scalar_mult_vfy(s, bad) == cpace.IDENTITY
    with pytest.raises(cpace.CPaceError):
        cpace.shared_isk(s, bad, b"sid", bad, b"", bad, b"")


def test_sampled_scalars_are_below_the_group_order() -> None:
    order = 2**252 + 27742317777372353535851937790883648493
    for _ in range(200):
        assert 0 <= int.from_bytes(cpace.sample_scalar(), "little") < order
