"""Pairing codes with a secret half: ``<nameplate>-<secret>``.

The nameplate is the code the gateway issued (what ``app:pair`` carries); the secret is made
by the runner and never sent to the gateway: it is the CPace password.
"""

from __future__ import annotations

import secrets

#: The gateway's code alphabet: no 0/O, 1/I/L.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: 7 symbols of 31: 34.7 bits, and the gateway gives an attacker one guess per code.
SECRET_LENGTH = 7


def make_secret(length: int = SECRET_LENGTH) -> str:
    """A uniform secret from one random draw (alphabet ** length), written in that base."""
    n = secrets.randbelow(len(ALPHABET) ** length)
    out = []
    for _ in range(length):
        n, digit = divmod(n, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(out)


def format_code(nameplate: str, secret: str) -> str:
    return f"{nameplate}-{secret}"


def split_code(code: str) -> tuple[str, str | None]:
    """(nameplate, secret) of a typed code: split at the last '-', upper-cased, spaces out.

    A code without '-' (a runner that does not encrypt) is all nameplate: secret None."""
    cleaned = "".join(code.split()).upper()
    nameplate, sep, secret = cleaned.rpartition("-")
    if not sep or not nameplate or not secret:
        return cleaned, None
    return nameplate, secret
