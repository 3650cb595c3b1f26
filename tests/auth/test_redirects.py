"""The redirect allow-list matcher, as a plain function."""

from __future__ import annotations

import pytest

from kilnbase.auth.redirects import is_allowed_redirect

ALLOW = [
    "https://app.example.com/auth",
    "https://*.preview.example.com",
    "myapp://callback",
    "http://localhost:3000",
]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://app.example.com/auth", True),
        ("https://app.example.com/auth/callback?x=1", True),
        ("https://app.example.com/authority", False),
        ("https://app.example.com/", False),
        ("http://app.example.com/auth", False),
        ("https://app.example.com:8443/auth", False),
        ("https://pr-12.preview.example.com/cb", True),
        ("https://preview.example.com/cb", False),
        ("https://pr-12.preview.example.com.evil.io/cb", False),
        ("https://app.example.com@evil.io/auth", False),
        ("myapp://callback/done", True),
        ("otherapp://callback", False),
        ("javascript:alert(1)", False),
        ("http://localhost:3000/anything", True),
        ("http://localhost:3001/anything", False),
        ("not a url", False),
        # A browser reads a backslash in an http(s) URL as a slash, so the host ends before it: these go to
        # evil.example, though Python's parser reads the host after the '@'.
        ("https://evil.example\\@app.example.com/auth", False),
        ("https://evil.example\\.pr-12.preview.example.com/cb", False),
        ("http://evil.example\\@localhost:3000/x", False),
        ("https://app.example.com/auth\\..\\..\\x", False),
    ],
)
def test_allow_list(url: str, allowed: bool) -> None:
    assert is_allowed_redirect(url, ALLOW) is allowed


def test_empty_allow_list_admits_only_localhost() -> None:
    assert is_allowed_redirect("http://localhost:5173/cb", [])
    assert is_allowed_redirect("http://127.0.0.1:8080/cb", [])
    assert not is_allowed_redirect("https://example.com/cb", [])
    assert not is_allowed_redirect("http://evil.example\\@localhost:5173/cb", [])
