"""Raw Engine.IO clients for hostile-input tests, and checks of what a gateway logged.

Everything here talks HTTP and websocket frames by hand (aiohttp's client), with a bounded
timeout on every read, so that a request the server never answers fails the test as a hang
instead of hanging it.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

#: The longest any single answer may take (generous: the machine is shared and loaded).
ANSWER_TIMEOUT_S = 15.0
POLL_PATH = "/socket.io/?EIO=4&transport=polling"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"


def http_session() -> aiohttp.ClientSession:
    """A client session whose every request is bounded (a hang is a TimeoutError)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S))


async def open_polling(http: aiohttp.ClientSession, url: str) -> str:
    """A new long-polling session; returns its sid."""
    async with http.get(url + POLL_PATH) as resp:
        body = await resp.text()
        assert resp.status == 200, (resp.status, body)
    assert body.startswith("0{"), body
    return str(json.loads(body[1:])["sid"])


async def post(http: aiohttp.ClientSession, url: str, sid: str, body: str | bytes) -> int:
    """POST a polling payload; returns the status (a server error fails at once)."""
    data = body.encode() if isinstance(body, str) else body
    async with http.post(f"{url}{POLL_PATH}&sid={sid}", data=data) as resp:
        await resp.read()
        assert resp.status < 500, (body, resp.status)
        return resp.status


async def poll(http: aiohttp.ClientSession, url: str, sid: str) -> tuple[int, str]:
    """One polling GET: (status, body)."""
    async with http.get(f"{url}{POLL_PATH}&sid={sid}") as resp:
        text = (await resp.read()).decode("utf-8", "replace")
        assert resp.status < 500, (resp.status, text)
        return resp.status, text


async def open_ws(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A websocket session past its OPEN packet (not yet in a Socket.IO namespace)."""
    ws = await http.ws_connect(url.replace("http://", "ws://") + WS_PATH, autoping=True)
    opening = await ws.receive_str(timeout=ANSWER_TIMEOUT_S)
    assert opening.startswith("0{"), opening
    return ws


async def ws_next(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The next text frame other than pings (answered) and noops; None once closed."""
    while True:
        msg = await ws.receive(timeout=ANSWER_TIMEOUT_S)
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            return None
        if msg.type is aiohttp.WSMsgType.BINARY:
            continue
        text = str(msg.data)
        if text == "2":
            await ws.send_str("3")
        elif text != "6":
            return text


async def ws_closes(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """Whether the server ends the connection (an Engine.IO close or the websocket's)."""
    while True:
        text = await ws_next(ws)
        if text is None or text == "1":
            return True


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def log_problems(log: str) -> list[str]:
    """Lines of a gateway's JSON log that a client's bad input must never cause.

    A traceback, a line at ERROR or above, a line that is not one JSON object (a raw second
    copy), or a NUL or other control character that reached the file unescaped.
    """
    problems = []
    for line in log.splitlines():
        if not line.strip():
            continue
        if any(ord(c) < 0x20 and c != "\t" for c in line):
            problems.append(f"raw control character: {line[:300]!r}")
            continue
        try:
            entry: Any = json.loads(line)
        except ValueError:
            problems.append(f"not a JSON line: {line[:300]!r}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"not a JSON object: {line[:300]!r}")
        elif "exc" in entry or "Traceback" in line:
            problems.append(f"traceback: {line[:600]}")
        elif entry.get("level") in ("error", "critical"):
            problems.append(f"at {entry.get('level')}: {line[:300]}")
    return problems
