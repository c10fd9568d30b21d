"""The Socket.IO pairing gateway: python-socketio on aiohttp over the ``pairing`` services."""
