"""HKDF against RFC 5869's vectors (A.1 and A.3, SHA-256: the construction does not depend
on the hash); SHA-512, which the protocol uses, is checked through e2e-v1.json."""

from __future__ import annotations

from pairing_client.e2e import hkdf


def test_rfc5869_a1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = hkdf.extract(salt, ikm, "sha256")
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = hkdf.expand(prk, info, 42, "sha256")
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_rfc5869_a3_empty_salt_and_info() -> None:
    prk = hkdf.extract(b"", bytes.fromhex("0b" * 22), "sha256")
    assert prk.hex() == "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    okm = hkdf.expand(prk, b"", 42, "sha256")
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
