"""A TCP proxy in front of a gateway that sees what an operator of the network would see.

It records every WebSocket payload both ways (client frames unmasked: a masked frame would
hide plaintext from a naive check), can flip a byte in the next binary frame to the client
that a predicate picks (an on-path attacker), can freeze its connections (a phone losing its
network: no FIN, no RST) or cut them, and sends new connections to ``upstream_port`` as it is
when they arrive (the replica a load balancer picks after one died).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tests.support.redis_server import free_port

Predicate = Callable[[bytes], bool]


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class _Frames:
    """Splits one direction's bytes into the HTTP head and WebSocket frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.in_head = True

    def feed(self, data: bytes) -> list[tuple[str, bytes, int, bytes]]:
        """(kind, raw bytes, opcode, unmasked payload) of each complete piece."""
        self.buf += data
        out: list[tuple[str, bytes, int, bytes]] = []
        while True:
            if self.in_head:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return out
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                self.in_head = False
                out.append(("head", head, 0, head))
                continue
            if len(self.buf) < 2:
                return out
            b0, b1 = self.buf[0], self.buf[1]
            length, i = b1 & 0x7F, 2
            if length == 126:
                if len(self.buf) < 4:
                    return out
                length, i = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                if len(self.buf) < 10:
                    return out
                length, i = int.from_bytes(self.buf[2:10], "big"), 10
            key = b""
            if b1 & 0x80:
                if len(self.buf) < i + 4:
                    return out
                key, i = bytes(self.buf[i : i + 4]), i + 4
            if len(self.buf) < i + length:
                return out
            raw = bytes(self.buf[: i + length])
            del self.buf[: i + length]
            payload = raw[i:]
            out.append(("frame", raw, b0 & 0x0F, unmask(payload, key) if key else payload))


class _Link:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.writers = (client, server)
        self.running = asyncio.Event()
        self.running.set()
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.transport.abort()


class RecordingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        #: Every byte that passed, as sent (raw), and every WebSocket payload unmasked.
        self.raw = bytearray()
        self.payloads = bytearray()
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tamper: tuple[Predicate, asyncio.Event] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, needle: bytes) -> bool:
        """Whether ``needle`` passed through, in the raw bytes or in an unmasked payload."""
        return needle in self.raw or needle in self.payloads

    async def start(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def tamper_next(self, predicate: Predicate) -> asyncio.Event:
        """Flip one bit in the next binary frame to a client whose payload ``predicate``
        accepts (in the middle of the payload); the event is set once done."""
        done = asyncio.Event()
        self._tamper = (predicate, done)
        return done

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, to_client=False)),
            asyncio.create_task(self._pump(link, up_reader, writer, to_client=True)),
        ]

    def _edit(self, raw: bytes, opcode: int, payload: bytes) -> bytes:
        if self._tamper is None or opcode != 2 or not self._tamper[0](payload):
            return raw
        done = self._tamper[1]
        self._tamper = None
        out = bytearray(raw)
        out[len(raw) - len(payload) + len(payload) // 2] ^= 0x04
        done.set()
        return bytes(out)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        to_client: bool,
    ) -> None:
        frames = _Frames()
        with contextlib.suppress(Exception):
            while True:
                await link.running.wait()
                data = await reader.read(65536)
                await link.running.wait()  # frozen while reading: the bytes go nowhere
                if not data:
                    break
                out = bytearray()
                for kind, raw, opcode, payload in frames.feed(data):
                    self.payloads += payload
                    if kind == "frame" and to_client:
                        raw = self._edit(raw, opcode, payload)
                    self.raw += raw
                    out += raw
                if out:
                    writer.write(bytes(out))
                    await writer.drain()
        await link.running.wait()  # a frozen link passes on no close either
        with contextlib.suppress(Exception):
            writer.close()

    def freeze(self) -> None:
        """Freeze every connection open now (new ones still pass)."""
        for link in self._links:
            link.running.clear()

    def cut(self) -> None:
        """Abort every connection."""
        links, self._links = self._links, []
        for link in links:
            link.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
