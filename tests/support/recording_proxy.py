"""A TCP proxy in front of a gateway that sees what an operator of the network would see.

A ``FreezingProxy`` that records every WebSocket payload both ways (client frames unmasked:
a masked frame would hide plaintext from a naive check) and can flip a byte in the next
binary frame to the client that a predicate picks (an on-path attacker); like any
``FreezingProxy`` it can freeze its connections (a phone losing its network: no FIN, no RST)
or cut them, and sends new connections to ``upstream_port`` as it is when they arrive (the
replica a load balancer picks after one died).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.support.freeze_proxy import Forward, FreezingProxy

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


class RecordingProxy(FreezingProxy):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        #: Every byte that passed, as sent (raw), and every WebSocket payload unmasked.
        self.raw = bytearray()
        self.payloads = bytearray()
        self._tamper: tuple[Predicate, asyncio.Event] | None = None

    def seen(self, needle: bytes) -> bool:
        """Whether ``needle`` passed through, in the raw bytes or in an unmasked payload."""
        return needle in self.raw or needle in self.payloads

    async def start(self) -> RecordingProxy:
        await super().start()
        return self

    def tamper_next(self, predicate: Predicate) -> asyncio.Event:
        """Flip one bit in the next binary frame to a client whose payload ``predicate``
        accepts (in the middle of the payload); the event is set once done."""
        done = asyncio.Event()
        self._tamper = (predicate, done)
        return done

    def _forwarder(self, *, to_client: bool) -> Forward:
        frames = _Frames()

        def forward(data: bytes) -> bytes:
            out = bytearray()
            for kind, raw, opcode, payload in frames.feed(data):
                self.payloads += payload
                if kind == "frame" and to_client:
                    raw = self._edit(raw, opcode, payload)
                self.raw += raw
                out += raw
            return bytes(out)

        return forward

    def _edit(self, raw: bytes, opcode: int, payload: bytes) -> bytes:
        if self._tamper is None or opcode != 2 or not self._tamper[0](payload):
            return raw
        done = self._tamper[1]
        self._tamper = None
        out = bytearray(raw)
        out[len(raw) - len(payload) + len(payload) // 2] ^= 0x04
        done.set()
        return bytes(out)
