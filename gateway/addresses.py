"""A client's address: the peer, or the nearest untrusted hop behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


def client_address(environ: dict[str, Any], trusted: Sequence[Network]) -> str:
    """The peer address, or the nearest untrusted X-Forwarded-For hop behind trusted proxies."""
    request = environ.get("aiohttp.request")
    peer = getattr(request, "remote", None) or "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return str(peer)
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", ""))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else str(peer)


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
