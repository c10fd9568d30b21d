"""A bare python-socketio AsyncServer on aiohttp (uvloop): the framework's own ceiling.

It serves the contract's event names with no Redis and no validation, state in memory:

- ``runner:register`` joins room ``runner:{runnerId}`` and acks ``pairingCode = runnerId``;
- ``runner:heartbeat`` acks ``{"success": true}`` at once (the ceiling scenario);
- ``app:pair`` ``{"pairingCode": runnerId}`` joins room ``paired:{runnerId}``;
- ``app:command`` emits ``terminal:input`` to room ``runner:{runnerId}``;
- ``runner:output`` emits ``terminal:output`` to room ``paired:{runnerId}``.

Pairing needs no shared state (the code is the runner id, apps listen on a room named after
their runner), so two of these processes with ``--redis-manager URL`` relay across replicas
through python-socketio's stock ``AsyncRedisManager``, which publishes every emit on one
channel that every process reads. Without it the stock in-process manager delivers.

Library defaults otherwise (stdlib json, a task per event), as ``pip install
python-socketio`` gives them: this is the stock framework the gateway is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import socketio
from aiohttp import web


def build(redis_url: str | None, *, async_handlers: bool = True) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        async_handlers=async_handlers,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")
    paired: dict[str, str] = {}  # app sid -> runner id
    app_ids: dict[str, str] = {}  # app sid -> appSessionId (or sid)
    runners: dict[str, str] = {}  # runner sid -> runner id

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and isinstance(auth.get("appSessionId"), str):
            app_ids[sid] = auth["appSessionId"]

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: Any = None) -> None:
        paired.pop(sid, None)
        app_ids.pop(sid, None)
        runners.pop(sid, None)

    @sio.on("runner:register")  # type: ignore[untyped-decorator]
    async def register(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        runner_id = str(data["runnerId"])
        runners[sid] = runner_id
        await sio.enter_room(sid, f"runner:{runner_id}")
        return {
            "success": True,
            "runnerId": runner_id,
            "pairingCode": runner_id,
            "expiresAt": 0,
            "heartbeatIntervalMs": 10_000,
        }

    @sio.on("runner:heartbeat")  # type: ignore[untyped-decorator]
    async def heartbeat(sid: str, data: Any = None) -> dict[str, Any]:
        return {"success": True}

    @sio.on("app:pair")  # type: ignore[untyped-decorator]
    async def pair(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        runner_id = str(data["pairingCode"])
        paired[sid] = runner_id
        await sio.enter_room(sid, f"paired:{runner_id}")
        return {"success": True, "runnerId": runner_id, "appSessionId": app_ids.get(sid, sid)}

    @sio.on("app:unpair")  # type: ignore[untyped-decorator]
    async def unpair(sid: str, data: Any = None) -> dict[str, Any]:
        runner_id = paired.pop(sid, None)
        if runner_id is not None:
            await sio.leave_room(sid, f"paired:{runner_id}")
        return {"success": True}

    @sio.on("app:command")  # type: ignore[untyped-decorator]
    async def command(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        runner_id = paired.get(sid)
        if runner_id is None:
            return {"error": "NOT_PAIRED", "message": "pair first"}
        message = {"appSessionId": app_ids.get(sid, sid), "data": data.get("data")}
        await sio.emit("terminal:input", message, room=f"runner:{runner_id}")
        return {"success": True}

    @sio.on("runner:output")  # type: ignore[untyped-decorator]
    async def output(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        runner_id = runners.get(sid)
        if runner_id is None:
            return {"error": "NOT_REGISTERED", "message": "register first"}
        message = {"runnerId": runner_id, "data": data.get("data")}
        await sio.emit("terminal:output", message, room=f"paired:{runner_id}")
        return {"success": True}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-manager", metavar="URL", help="use AsyncRedisManager(URL)")
    parser.add_argument(
        "--no-async-handlers",
        action="store_true",
        help="async_handlers=False (the gateway's setting) instead of the library default",
    )
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = build(args.redis_manager, async_handlers=not args.no_async_handlers)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
