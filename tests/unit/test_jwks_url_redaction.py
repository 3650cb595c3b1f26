"""`redacted_url`: what a log line or an audit entry may show of a JWT provider's JWKS URL."""

from __future__ import annotations

import pytest

from kilnbase.identity.external_tokens import redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://idp.example/.well-known/jwks.json", "https://idp.example/.well-known/jwks.json"),
        ("https://user:pass@idp.example:8443/jwks", "https://***@idp.example:8443/jwks"),
        ("https://token@idp.example/jwks", "https://***@idp.example/jwks"),
        ("https://idp.example/jwks?token=abc&tenant=acme", "https://idp.example/jwks?token=***&tenant=***"),
        ("https://idp.example/jwks?abc#frag", "https://idp.example/jwks?***"),
        ("http://u:p@[::1]:8080/jwks?k=v", "http://***@[::1]:8080/jwks?k=***"),
        ("https://idp.example:abc/jwks", "(a URL that cannot be read)"),
    ],
)
def test_userinfo_and_query_values_are_hidden(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
