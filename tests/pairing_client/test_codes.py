from __future__ import annotations

import math
from collections import Counter

from pairing_client.codes import ALPHABET, SECRET_LENGTH, format_code, make_secret, split_code


def test_secrets_have_at_least_30_bits_from_the_alphabet() -> None:
    assert SECRET_LENGTH * math.log2(len(ALPHABET)) >= 30
    seen = Counter("".join(make_secret() for _ in range(2000)))
    assert set(seen) == set(ALPHABET)


def test_split_at_the_last_dash() -> None:
    assert split_code(format_code("K7M2P9QXRT", "H4X9QTR")) == ("K7M2P9QXRT", "H4X9QTR")
    assert split_code(" my-code-h4x9qtr ") == ("MY-CODE", "H4X9QTR")
    assert split_code("K7M2P9QXRT") == ("K7M2P9QXRT", None)
    assert split_code("K7M2P9QXRT-") == ("K7M2P9QXRT-", None)
