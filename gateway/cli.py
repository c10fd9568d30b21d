"""``pairing-gateway [--config PATH] [--host H] [--port P] [--redis-url URL]``.

Operator commands share the name: ``pairing-gateway runner release <runnerId>`` (with
``--config`` / ``--redis-url``) forgets a runnerId's key binding. The server's own command
line is unchanged: only a first positional word ``runner`` selects the operator command.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.config import ConfigError, Settings, load_settings
from gateway.logs import setup_logging

log = logging.getLogger("gateway")


#: Options of the server's command line that take a value (to find the first positional).
_VALUE_OPTIONS = {"--config", "--host", "--port", "--redis-url"}
RUNNER_COMMAND = "runner"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pairing-gateway",
        description="Socket.IO pairing gateway for mobile apps and runner daemons.",
        epilog="Operator command: pairing-gateway runner release [--config PATH] "
        "[--redis-url URL] RUNNER_ID forgets a runnerId's runnerKey binding.",
    )
    parser.add_argument("--config", metavar="PATH", help="YAML config file (config.yaml)")
    parser.add_argument("--host", help="address to listen on")
    parser.add_argument("--port", type=int, help="port to listen on")
    parser.add_argument(
        "--redis-url",
        help="redis://, rediss://, unix://, redis+sentinel://host:port/service/db, "
        "or memory:// (embedded single-process store)",
    )
    return parser.parse_args(argv)


def load(argv: Sequence[str] | None = None) -> Settings:
    args = parse_args(argv)
    return load_settings(
        args.config,
        overrides={"host": args.host, "port": args.port, "redis_url": args.redis_url},
    )


def _first_positional(argv: Sequence[str]) -> int | None:
    """Index of the first word that is neither an option nor an option's value."""
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
        elif token == "--":
            return i + 1 if i + 1 < len(argv) else None
        elif token in _VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return i
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    at = _first_positional(args)
    if at is not None and args[at] == RUNNER_COMMAND:
        from gateway.operator import runner_command

        return runner_command(args[:at] + args[at + 1 :])
    try:
        settings = load(args)
    except ConfigError as exc:
        print(f"pairing-gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    from gateway.app import create_app

    app = create_app(settings)
    store = (
        "embedded memory:// store (single replica)"
        if settings.redis_url.startswith("memory://")
        else "Redis"
    )
    log.info(
        f"pairing-gateway listening on {settings.host}:{settings.port} using {store}",
        extra={"redis_url": _redact(settings.redis_url)},
    )
    tune_gc()
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
    )
    return 0


#: The garbage collector's thresholds (CPython's defaults: 700, 10, 10). An event's objects
#: are freed by reference counting, but those of the events in flight count as growth: at 700
#: a generation-0 collection ran every few events, scanning and promoting them, and their
#: promotions set off full collections of every connection's objects, about a sixth of the
#: heartbeat path's CPU. Only cyclic garbage waits longer now (50,000 allocations' worth).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect less often, and never scan the start-up objects (modules, the app) again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


if __name__ == "__main__":
    sys.exit(main())
