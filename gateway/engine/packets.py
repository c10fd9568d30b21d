"""The common Socket.IO packets, read and written without python-socketio's ``Packet``.

Every event and ack of the default namespace passes here, so they skip python-socketio's
packet objects and their search for binary attachments. What they take, they read exactly as
``Packet`` does; a packet they do not take is left to it.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.engine.codec import MsgspecJSON

dumps = MsgspecJSON.dumps
_decode_json = MsgspecJSON.loads
_SCALARS = frozenset({str, int, bool, float, type(None)})
#: Digits of an ack id read by ``parse_event`` (python-socketio reads up to 100).
_MAX_ID_DIGITS = 18


def parse_event(data: str) -> tuple[int | None, list[Any]] | None:
    """An EVENT packet of the default namespace: (ack id, [name, *args]), else None.

    Only the common shape, ``2`` then an optional ack id then a JSON array, which
    python-socketio's ``Packet`` decodes to the same; anything else (a namespace, an
    attachment count, a body that is not an array or does not parse) is None and left
    to python-socketio, with its answers for bad packets.
    """
    end = len(data)
    i = 1
    while i < end and "0" <= data[i] <= "9":
        i += 1
    if i == end or data[i] != "[" or i - 1 > _MAX_ID_DIGITS:
        return None
    try:
        args = _decode_json(data[i:])
    except Exception:
        return None
    if type(args) is not list:
        return None
    return (int(data[1:i]) if i > 1 else None), args


def plain(value: Any) -> bool:
    """Whether ``value`` holds JSON types only (no bytes: those need binary attachments)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        return all(type(v) in _SCALARS or plain(v) for v in value.values())
    if kind is list:
        return all(type(v) in _SCALARS or plain(v) for v in value)
    return False


#: The header of a Socket.IO EVENT or BINARY_EVENT packet that carries an ack id.
EVENT_HEADER = re.compile(r"^[25](?:\d+-)?(?:(?P<ns>/[^,]*),)?(?P<id>\d{1,100})(?!\d)")

#: The header of a Socket.IO CONNECT packet, with its namespace (query string left out).
CONNECT_HEADER = re.compile(r"^0(?:(?P<ns>/[^,?]*)[^,]*,)?")
