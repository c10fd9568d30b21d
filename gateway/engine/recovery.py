"""Socket.IO connection state recovery, python-socketio's side of it.

python-socketio has no connection state recovery: it draws a new sid for every CONNECT and
replies ``{"sid"}``. What the gateway needs of it (``GatewayServer`` with a ``recovery``):

- a CONNECT whose auth names a session to restore gets that session's sid, which
  ``RecoveringManager.pre_connect`` takes instead of a new one (the rest of python-socketio
  sees an ordinary connection);
- the CONNECT reply carries the connection's ``pid`` (``GatewayServer._send_packet``);
- events carry their offset as one more argument (``GatewayServer.emit_with_offset``).

Deciding what is restored, and sending what was missed, is the handlers' part
(``gateway.handlers.recovery``), behind the ``ConnectionRecovery`` interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import socketio
from bidict import ValueDuplicationError

#: python-socketio's disconnect reasons after which a client may come back for its session
#: (as Node's RECOVERABLE_DISCONNECT_REASONS): the network or the server went, not the client
#: nor a newer connection of the same session.
RECOVERABLE_REASONS = frozenset(
    {
        socketio.AsyncServer.reason.PING_TIMEOUT,
        socketio.AsyncServer.reason.TRANSPORT_CLOSE,
        socketio.AsyncServer.reason.TRANSPORT_ERROR,
    }
)


class ConnectionRecovery(Protocol):
    """What the server asks of the handlers about recovery."""

    async def restorable(self, auth: Any) -> str | None:
        """The sid of the session a CONNECT's auth restores (its pid and offset are valid,
        and everything missed since is there to send), or None for a new session."""

    def settled(self, sid: str) -> None:
        """The CONNECT that ``restorable`` answered ``sid`` for is done (made or refused)."""

    def pid_of(self, sid: str) -> str | None:
        """The pid to put in the CONNECT reply of ``sid`` (None: none)."""


class RecoveringManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager, able to connect an Engine.IO session under a given sid."""

    def __init__(self) -> None:
        super().__init__()
        #: eio_sid -> the sid its next CONNECT to "/" takes.
        self._given: dict[str, str] = {}

    def give_sid(self, eio_sid: str, sid: str) -> None:
        self._given[eio_sid] = sid

    def take_back(self, eio_sid: str) -> None:
        self._given.pop(eio_sid, None)

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        """``BaseManager.pre_connect`` with the given sid instead of a new one.

        A sid still in use here (the same session connecting twice at once) is not given
        twice: that connection gets a new one, and so a new session.
        """
        sid = self._given.pop(eio_sid, None)
        if sid is None or namespace != "/" or self.eio_sid_from_sid(sid, namespace) is not None:
            drawn: str | None = await super().pre_connect(eio_sid, namespace)
            return drawn
        try:
            self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        except ValueDuplicationError:
            return None  # this Engine.IO session is in the namespace already
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid
