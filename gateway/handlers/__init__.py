"""The contract's client events, handled over the injected ``pairing`` services.

``PairingGateway`` (``dispatch``) is one object per replica that joins the handlers by
concern: ``connection`` (connect, disconnect, a runner gone), ``resume`` (replays and the
floors of every local delivery), ``recovery`` (Socket.IO connection state recovery, when
on), ``runner_events`` and ``app_events``; ``base`` holds what they share. ``attach`` wires
it to the Socket.IO server.
"""

from gateway.handlers.base import Conn, GatewayOptions, Role
from gateway.handlers.dispatch import PairingGateway, attach

__all__ = ["Conn", "GatewayOptions", "PairingGateway", "Role", "attach"]
