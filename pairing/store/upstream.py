"""Everything ``pairing.store`` relies on inside redis-py, in one place.

The pipelined link and the pub/sub subscriber read and write a redis-py connection's socket
themselves and treat its replies as redis-py would; that reaches past redis-py's public API.
Those reaches are all here, each named in ``RELIED_ON`` or ``MIRRORED``, and
``tests/pairing/store/test_upstream_redis.py`` fails naming the one an upgrade changed. redis
is pinned to the minor version this was written against (pyproject.toml, uv.lock).
"""

from __future__ import annotations

import asyncio
import inspect
from hashlib import sha256
from typing import Any

from redis._parsers.base import BaseParser
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import InvalidResponse

__all__ = [
    "EMPTY_RESPONSE",
    "MIRRORED",
    "NEVER_DECODE",
    "RELIED_ON",
    "fingerprint",
    "parse_error",
    "parse_reply",
    "reader_options",
    "streams",
]

#: redis-py's error-reply parser: "NOSCRIPT ..." -> NoScriptError, "READONLY ..." ->
#: ReadOnlyError, ...; the link's hiredis reader builds its error replies with it.
parse_error = BaseParser.parse_error

#: Private attributes and module members used here: (module, object path), checked to exist.
RELIED_ON: tuple[tuple[str, str], ...] = (
    ("redis._parsers.base", "BaseParser.parse_error"),
    ("redis.client", "EMPTY_RESPONSE"),
    ("redis.client", "NEVER_DECODE"),
    ("redis.asyncio.connection", "AbstractConnection._reader"),  # set by connect()
    ("redis.asyncio.connection", "AbstractConnection._writer"),
    # pairing.store.cluster narrows which errors the cluster client resends after
    ("redis.asyncio.cluster", "RedisCluster.ERRORS_ALLOW_RETRY"),
    # pairing.store.cluster's pipelined path follows redirections with the slot map's own
    # bookkeeping, and the sharded subscriber finds a channel's owner in it
    ("redis.asyncio.cluster", "NodesManager.move_slot"),
    ("redis.asyncio.cluster", "NodesManager.get_node_from_slot"),
    ("redis.asyncio.cluster", "NodesManager.initialize"),
)

#: Upstream code whose behaviour ``reader_options``, ``parse_reply`` and
#: ``AutoPipelineRedis.execute_command`` reproduce or replace, with the sha256 (first 16 hex
#: digits) of its source when this was written: a changed source means review the copy here.
MIRRORED: dict[str, str] = {
    # reader_options: the options hiredis.Reader gets
    "redis._parsers.hiredis._AsyncHiredisParser.on_connect": "5c7b848496314124",
    # parse_reply: what happens to a reply once read
    "redis.asyncio.client.Redis.parse_response": "d66cfb53d08c4160",
    # AutoPipelineRedis.execute_command: replaces it for the pipelined commands (one retry
    # on a lost connection, as the pool's default Retry does)
    "redis.asyncio.client.Redis.execute_command": "b35fa092ad038e77",
    # pairing.store.cluster._RedisCluster: upstream's retry loop resends after the errors in
    # ``self.__class__.ERRORS_ALLOW_RETRY``, which the subclass narrows
    "redis.asyncio.cluster.RedisCluster.execute_command": "e89f547a70075fa6",
    # pairing.store.cluster._RedisCluster._pipelined: what upstream does on MOVED, ASK,
    # TRYAGAIN, CLUSTERDOWN and a lost connection, for the keyed commands it sends itself
    "redis.asyncio.cluster.RedisCluster._execute_command": "d3b4bf161162bb6d",
}


def fingerprint(obj: Any) -> str:
    return sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def streams(conn: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The connected socket's streams, which redis-py keeps private."""
    return conn._reader, conn._writer


def reader_options(conn: Any) -> dict[str, Any]:
    """hiredis.Reader options as redis-py's own hiredis parser sets them (``on_connect``)."""
    options: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": parse_error}
    encoder = conn.encoder
    if encoder.decode_responses:
        options["encoding"] = encoder.encoding
        options["errors"] = encoder.encoding_errors
    return options


async def parse_reply(client: Any, name: str, response: Any, options: dict[str, Any]) -> Any:
    """A reply read for ``name`` as ``Redis.parse_response`` finishes it (error replies and
    ``EMPTY_RESPONSE`` are the caller's)."""
    options.pop(EMPTY_RESPONSE, None)
    options.pop("keys", None)  # only for redis-py's client-side cache
    callbacks = client.response_callbacks
    if name not in callbacks:
        return response
    result = callbacks[name](response, **options)
    return await result if inspect.isawaitable(result) else result
