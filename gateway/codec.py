"""msgspec as the JSON module of python-socketio and python-engineio."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class MsgspecJSON:
    """The ``dumps``/``loads`` pair python-socketio expects of a ``json`` module."""

    JSONDecodeError = msgspec.DecodeError

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return _encoder.encode(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return _decoder.decode(data)
