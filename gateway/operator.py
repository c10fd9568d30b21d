"""Operator commands against the shared store: ``pairing-gateway runner release <runnerId>``.

Run from any machine that reaches the gateways' Redis; no gateway needs a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence

from redis.exceptions import RedisError

from gateway.config import ConfigError, Settings, load_settings
from gateway.protocol import RUNNER_ID_PATTERN
from pairing import RunnerRegistration, keys
from pairing.store import connect, is_memory_url


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS)
    common.add_argument("--redis-url", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="pairing-gateway runner",
        description="Operator commands for runners.",
        parents=[common],
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    release = actions.add_parser(
        "release",
        parents=[common],
        help="forget a runnerId's runnerKey binding (the next registration binds anew)",
        description="Forget the runnerKey binding of RUNNER_ID, for a runner that lost its "
        "key or to rotate it: the runner then registers with its new key, which binds. Its "
        "connection and pairings are left alone.",
    )
    release.add_argument("runner_id", metavar="RUNNER_ID")
    return parser


def runner_command(argv: Sequence[str]) -> int:
    """Exit 0 when done, 1 when the store cannot be reached, 2 for a usage error."""
    args = _parser().parse_args(argv)
    if re.match(RUNNER_ID_PATTERN, args.runner_id) is None:
        print(
            "pairing-gateway: RUNNER_ID must be 1-128 chars of A-Z a-z 0-9 _ . : -", file=sys.stderr
        )
        return 2
    try:
        settings = load_settings(
            getattr(args, "config", None),
            overrides={"redis_url": getattr(args, "redis_url", None)},
        )
    except ConfigError as exc:
        print(f"pairing-gateway: {exc}", file=sys.stderr)
        return 2
    if is_memory_url(settings.redis_url):
        print(
            "pairing-gateway: memory:// lives inside the gateway process; restart it instead "
            "(its bindings go with it)",
            file=sys.stderr,
        )
        return 2
    try:
        released = asyncio.run(_release(settings, args.runner_id))
    except (RedisError, OSError, TimeoutError) as exc:
        print(f"pairing-gateway: the store is unreachable: {exc}", file=sys.stderr)
        return 1
    if released:
        print(f"released runner {args.runner_id}: its next registration binds a new key")
    else:
        print(f"runner {args.runner_id} had no key binding; nothing to release")
    return 0


async def _release(settings: Settings, runner_id: str) -> bool:
    store = connect(settings.redis_url, socket_timeout=settings.store_timeout_s)
    try:
        async with asyncio.timeout(settings.store_timeout_s * 2):
            registration = RunnerRegistration(
                store,
                history_max_len=settings.history.max_len,
                layout=keys.layout_for(settings.redis_url),
            )
            return await registration.release_key(runner_id)
    finally:
        await store.aclose()
