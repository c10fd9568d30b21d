"""python-engineio and python-socketio, adapted: every use of their internals is in here.

- ``socketio_server``: ``GatewayServer``, python-socketio's server with an inbox per socket
  (events in arrival order, off the read loop), an ack for every event that asked for one,
  and acks and emits encoded without packet objects (``packets``).
- ``engineio_server``, ``socket``, ``queue``: python-engineio's server, socket and outgoing
  queue, lean per idle connection (one timer per socket, no task per message) and answering
  as Engine.IO v4 specifies where python-engineio differs.
- ``codec``: msgspec as the JSON module of both.
- ``recovery``: what connection state recovery needs of python-socketio (a CONNECT under a
  given sid, the pid in the CONNECT reply); the handlers decide what is restored.

The rest of the gateway uses only the public API of these classes and of python-socketio.
The upstream methods they replace or call are pinned by a hash of their source in
``tests/gateway/engine/test_upstream_engine.py``, which fails naming the method when an upgrade
changes one.
"""

from gateway.engine.socketio_server import GatewayServer, build_server

__all__ = ["GatewayServer", "build_server"]
