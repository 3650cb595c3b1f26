"""The client's address: one rule for rate limits, audit entries and the gateway.

The peer's address, unless the peer is a configured trusted proxy (`KILNBASE_TRUSTED_PROXIES`): then the
rightmost address of `X-Forwarded-For` that is not itself a trusted proxy, which is the one the nearest proxy
we trust saw. Nothing a client writes in a header is believed otherwise, so one header cannot reset a
per-address limit or rewrite an audit entry. The ASGI server's own proxy-header handling is off (`cli.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED_FOR = b"x-forwarded-for"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(scope: Scope, trusted_proxies: Sequence[Network]) -> str | None:
    """The client's IP address as text, or None when the peer is not an IP (a test transport, a socket)."""
    client = scope.get("client")
    peer = _ip(client[0]) if client else None
    if peer is None or not trusted_proxies or not _trusted(peer, trusted_proxies):
        return str(peer) if peer is not None else None
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == _FORWARDED_FOR:
            hops.extend(value.decode("latin-1").split(","))
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            return str(peer)  # a malformed entry: believe nothing further to the left
        if not _trusted(address, trusted_proxies):
            return str(address)
    return str(peer)
