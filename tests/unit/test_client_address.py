"""The client-address rule: the peer, unless the peer is a trusted proxy; then the rightmost forwarded
address that is not itself a trusted proxy. Malformed or missing entries never make a client up."""

from __future__ import annotations

import ipaddress

import pytest

from kilnbase.http.client_address import client_address, forwarded_chain

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def scope(peer: str | None, *forwarded: str) -> dict[str, object]:
    return {
        "client": (peer, 5555) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ("198.51.100.1",), "203.0.113.5"),  # not a proxy: its header means nothing
        ("10.0.0.2", ("198.51.100.1",), "198.51.100.1"),
        ("10.0.0.2", ("6.6.6.6, 198.51.100.1",), "198.51.100.1"),  # the client's own entries are ignored
        ("10.0.0.2", ("198.51.100.1, 10.0.0.3",), "198.51.100.1"),  # a chain of our proxies
        ("10.0.0.2", ("198.51.100.1", "10.0.0.3"), "198.51.100.1"),  # the header sent twice
        ("10.0.0.2", (), "10.0.0.2"),
        ("10.0.0.2", ("10.0.0.9",), "10.0.0.2"),  # only proxies: the peer
        ("10.0.0.2", ("not-an-ip, 10.0.0.3",), "10.0.0.2"),  # a malformed hop: believe nothing further
        ("::1", ("2001:db8::7",), "2001:db8::7"),
        ("testclient", ("198.51.100.1",), None),  # a peer that is not an address
        (None, ("198.51.100.1",), None),
    ],
)
def test_client_address(peer: str | None, forwarded: tuple[str, ...], expected: str | None) -> None:
    assert client_address(scope(peer, *forwarded), PROXIES) == expected


def test_without_trusted_proxies_headers_are_never_read() -> None:
    assert client_address(scope("127.0.0.1", "198.51.100.1"), ()) == "127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ("198.51.100.1",), ["203.0.113.5"]),  # not a proxy: its header is dropped
        ("10.0.0.2", ("6.6.6.6, 198.51.100.1",), ["198.51.100.1", "10.0.0.2"]),
        ("10.0.0.2", ("198.51.100.1, 10.0.0.3",), ["198.51.100.1", "10.0.0.3", "10.0.0.2"]),
        ("10.0.0.2", ("not-an-ip, 10.0.0.3",), ["10.0.0.2"]),
        ("10.0.0.2", ("10.0.0.9",), ["10.0.0.2"]),
        ("testclient", ("198.51.100.1",), []),
    ],
)
def test_forwarded_chain(peer: str, forwarded: tuple[str, ...], expected: list[str]) -> None:
    """What a proxied request's `X-Forwarded-For` says: the client first, as `client_address` decides."""
    assert forwarded_chain(scope(peer, *forwarded), PROXIES) == expected
    assert client_address(scope(peer, *forwarded), PROXIES) == (expected[0] if expected else None)
