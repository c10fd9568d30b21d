"""Guards on what pairing.store relies on inside redis-py: each failure names what changed.

redis is pinned to a minor version (pyproject.toml); when uv.lock moves it, these tests say
which private attribute disappeared or which mirrored upstream method changed, so that the
copy in ``pairing/store/upstream.py`` is reviewed instead of silently going stale.
"""

from __future__ import annotations

import asyncio
import importlib

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from pairing.store import upstream
from pairing.store.autopipeline import AutoPipelineRedis, open_connection
from tests.support.redis_server import RedisProcess


def _find(qualname: str) -> object:
    """The object a dotted name denotes (the longest importable module prefix, then attrs)."""
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(qualname)


@pytest.mark.parametrize(("module", "path"), upstream.RELIED_ON, ids=lambda v: str(v))
def test_relied_on_names_exist(module: str, path: str) -> None:
    if path.endswith(("._reader", "._writer")):
        return  # instance attributes: test_a_connection_exposes_its_streams checks them
    try:
        _find(f"{module}.{path}")
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"redis-py no longer has {module}.{path} (pairing/store/upstream.py): {exc}")


@pytest.mark.parametrize("qualname", sorted(upstream.MIRRORED))
def test_mirrored_upstream_code_is_unchanged(qualname: str) -> None:
    try:
        obj = _find(qualname)
    except (ImportError, AttributeError):
        pytest.fail(f"redis-py no longer has {qualname} (pairing/store/upstream.py)")
    found = upstream.fingerprint(obj)
    assert found == upstream.MIRRORED[qualname], (
        f"redis-py changed {qualname} (fingerprint {found}): review what "
        "pairing/store/upstream.py and autopipeline.py copy or replace from it, "
        "then record the new fingerprint in upstream.MIRRORED"
    )


async def test_a_connection_exposes_its_streams(redis_proc: RedisProcess) -> None:
    pool = aioredis.ConnectionPool.from_url(redis_proc.url)
    conn = await open_connection(pool)
    try:
        try:
            reader, writer = upstream.streams(conn)
        except AttributeError as exc:
            pytest.fail(f"redis-py's connection lost {exc.name}: pairing/store/upstream.streams")
        assert isinstance(reader, asyncio.StreamReader), "Connection._reader changed type"
        assert isinstance(writer, asyncio.StreamWriter), "Connection._writer changed type"
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        assert await reader.readuntil(b"\r\n") == b"+PONG\r\n"
        enc = conn.encoder
        for attr in ("encode", "encoding", "encoding_errors", "decode_responses"):
            assert hasattr(enc, attr), f"redis-py's Encoder lost {attr} (autopipeline.packer)"
    finally:
        await conn.disconnect(nowait=True)
        await pool.aclose()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("NOSCRIPT No matching script.", NoScriptError),
        ("READONLY You can't write against a read only replica.", ReadOnlyError),
        ("ERR unknown command", ResponseError),
    ],
)
def test_parse_error_maps_replies_to_the_exceptions_we_catch(
    reply: str, error: type[Exception]
) -> None:
    exc = upstream.parse_error(reply)
    assert type(exc) is error, f"BaseParser.parse_error({reply!r}) is now {type(exc)}"


async def test_commands_still_pass_the_options_parse_reply_handles(
    redis_proc: RedisProcess,
) -> None:
    """redis-py's command methods hand execute_command the option names we strip."""
    seen: list[dict[str, object]] = []

    class Recording(AutoPipelineRedis):
        async def execute_command(self, *args: object, **options: object) -> object:
            seen.append(dict(options))
            return await super().execute_command(*args, **options)

    client = Recording.from_url(redis_proc.url)
    try:
        assert await client.mget([]) == []  # answered by redis-py's EMPTY_RESPONSE
        await client.get("k1")
    finally:
        await client.aclose()
    assert upstream.EMPTY_RESPONSE in seen[0], "mget([]) no longer passes EMPTY_RESPONSE"
    assert "keys" in seen[1], "get no longer passes keys= (parse_reply pops it)"
