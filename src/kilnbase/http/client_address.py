"""The client's address: one rule for rate limits, audit entries and the gateway.

The peer's address, unless the peer is a configured trusted proxy (`KILNBASE_TRUSTED_PROXIES`): then the
rightmost address of `X-Forwarded-For` that is not itself a trusted proxy, which is the one the nearest proxy
we trust saw. Nothing a client writes in a header is believed otherwise, so one header cannot reset a
per-address limit or rewrite an audit entry. The ASGI server's own proxy-header handling is off (`cli.py`).
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def _peer(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str] | None:
    """The peer's address and its canonical text, worked out once per address seen: a server hears from
    the same few peers (its proxies, its clients) request after request, and the address is the socket's,
    not a header's."""
    address = _ip(text)
    return None if address is None else (address, str(address))


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(scope: Scope, trusted_proxies: Sequence[Network]) -> str | None:
    """The client's IP address as text, or None when the peer is not an IP (a test transport, a socket)."""
    chain = forwarded_chain(scope, trusted_proxies)
    return chain[0] if chain else None


def forwarded_chain(scope: Scope, trusted_proxies: Sequence[Network]) -> list[str]:
    """The addresses a request is believed to have come through, the client first and the peer last: what
    Kilnbase passes on as `X-Forwarded-For` when it proxies the request itself (to a function), so that
    the next hop sees this rule's decision and nothing a client wrote. Empty when the peer is not an IP."""
    client = scope.get("client")
    known = _peer(client[0]) if client else None
    if known is None:
        return []
    peer, peer_text = known
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return [peer_text]
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == _FORWARDED_FOR:
            hops.extend(value.decode("latin-1").split(","))
    proxies: list[str] = []
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            return [peer_text]  # a malformed entry: believe nothing further to the left
        if not _trusted(address, trusted_proxies):
            return [str(address), *reversed(proxies), peer_text]
        proxies.append(str(address))
    return [peer_text]
