"""A TCP proxy whose connections can freeze: what a phone losing its network looks like.

Frozen, a connection forwards nothing either way and reads nothing (so the sender's kernel
buffers fill up), but stays open: no FIN, no RST, in either direction, also when one end
closes meanwhile. Only connections open at the time freeze; new ones (the client
reconnecting, maybe on its new network) are forwarded normally, to ``upstream`` as it is
when they arrive. SIGSTOP of a process does not model this: the kernel still answers for
the stopped process, and its peer sees the data acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tests.support.redis_server import free_port

#: What one direction of one connection does to each chunk it forwards.
Forward = Callable[[bytes], bytes]


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


class FreezingProxy:
    """Forwards bytes unchanged; a subclass sees or edits them (``_forwarder``)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def _forwarder(self, *, to_client: bool) -> Forward:
        """A new connection's handling of one direction's bytes (here: none)."""
        return bytes

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(
                self._pump(link, reader, up_writer, self._forwarder(to_client=False))
            ),
            asyncio.create_task(
                self._pump(link, up_reader, writer, self._forwarder(to_client=True))
            ),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forward: Forward,
    ) -> None:
        with contextlib.suppress(Exception):
            while True:
                await link.running.wait()
                data = await reader.read(65536)
                await link.running.wait()  # frozen while reading: the bytes go nowhere
                if not data:
                    break
                out = forward(data)
                if out:
                    writer.write(out)
                    await writer.drain()
        await link.running.wait()  # a frozen link passes on no close either
        with contextlib.suppress(Exception):
            writer.close()

    def freeze(self) -> None:
        """Freeze every connection open now (new ones still pass)."""
        for link in self._links:
            link.running.clear()

    def cut(self) -> None:
        """Abort every connection (ends a test's frozen ones)."""
        links, self._links = self._links, []
        for link in links:
            link.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
