"""tests/support/redis_server.py: a private redis-server whose port another process took."""

from __future__ import annotations

import socket

import pytest
import redis

from tests.support.redis_server import RedisProcess


def _occupied() -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_a_first_start_draws_again_a_port_taken_meanwhile() -> None:
    holder = _occupied()
    taken = holder.getsockname()[1]
    server = RedisProcess(port=taken)
    try:
        server.start()
        assert server.port != taken
        assert redis.Redis(port=server.port).ping() is True
        # A restart keeps its port (fault tests stop and start the same server).
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
    finally:
        server.close()
        holder.close()


def test_a_restart_whose_port_was_taken_fails_instead_of_moving() -> None:
    server = RedisProcess()
    server.start()
    port = server.port
    server.stop()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        assert server.port == port
    finally:
        holder.close()
        server.close()


def test_a_server_that_refuses_its_options_fails_with_what_it_said() -> None:
    server = RedisProcess(extra_args=("--no-such-option", "1"))
    try:
        with pytest.raises(RuntimeError, match="no-such-option"):
            server.start()
    finally:
        server.close()
