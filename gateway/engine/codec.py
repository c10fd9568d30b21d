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
        try:
            return _decoder.decode(data)
        except RecursionError:
            # A ValueError, which python-engineio and python-socketio treat as bad input.
            raise msgspec.DecodeError("JSON is nested too deeply") from None
