"""What a held stream costs in Redis: ``used_memory`` before and after filling holds.

``python -m bench.hold_memory`` starts a private redis-server, fills the holds of ``--apps``
streams with ``--messages`` terminal:output messages of each size, the way the gateway does
(``RelayService.output``, the gateway's msgpack blob), and prints a Markdown table for the
"Resume hold" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec

from pairing import keys
from pairing.relay import OUT, Recipient, RelayService
from pairing.store import connect
from tests.support.redis_server import RedisProcess

SIZES = (16, 80, 256, 1024, 4096, 16384)


async def fill(url: str, apps: int, messages: int, size: int) -> tuple[int, int, int]:
    """Returns (used_memory growth, messages held in all, bytes of their blobs)."""
    redis = connect(url)
    try:
        await redis.flushall()
        relay = RelayService(redis)
        await relay.load_scripts()
        encode = msgspec.msgpack.Encoder().encode
        blob = encode({"runnerId": "bench-runner", "data": "x" * size})
        app_ids = [f"bench-hold-app-{i:06d}" for i in range(apps)]
        for app in app_ids:
            await redis.sadd(keys.runner_apps(f"r-{app}"), app)
        before = int((await redis.info("memory"))["used_memory"])

        async def stream(app: str) -> None:
            for _ in range(messages):
                await relay.output(f"r-{app}", None, [Recipient(app, None, b"")], blob)

        await asyncio.gather(*(stream(a) for a in app_ids))
        after = int((await redis.info("memory"))["used_memory"])
        held = 0
        for app in app_ids:
            held += int(await redis.llen(keys.resume_hold(app, OUT)))
        return after - before, held, held * len(blob)
    finally:
        await redis.aclose()


async def main(apps: int, messages: int) -> None:
    server = RedisProcess()
    server.start()
    try:
        print(
            "| data bytes per message | messages held per stream | Redis bytes per stream "
            "| Redis bytes per held message | of which overhead over the data |"
        )
        print("|---|---|---|---|---|")
        for size in SIZES:
            grew, held, _ = await fill(server.url, apps, messages, size)
            per_stream = grew / apps
            per_msg = grew / held
            print(
                f"| {size:,} | {held // apps:,} | {per_stream / 1024:,.0f} KiB "
                f"| {per_msg:,.0f} | {per_msg - size:,.0f} |"
            )
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50, help="streams filled (default 50)")
    parser.add_argument(
        "--messages", type=int, default=1000, help="messages sent per stream (default 1000)"
    )
    ns = parser.parse_args()
    asyncio.run(main(ns.apps, ns.messages))
