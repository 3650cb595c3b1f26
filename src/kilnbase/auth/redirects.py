"""Redirect URLs checked against the project's allow-list (`auth.config.allowed_redirect_urls`).

An entry matches by origin and path prefix; `*.` in the host allows exactly one or more subdomain labels
(`https://*.example.com` matches `https://app.example.com`, not `https://example.com.evil.io`). An empty
allow-list allows any http(s) URL on localhost only, so a fresh project works in development.

An http(s) URL with a backslash is refused: a browser reads it as a slash, so the host ends there
(`https://evil.example\\@app.example.com` goes to evil.example), while Python's `urlsplit` reads the host
after the `@`. Matching what Python sees would send the browser, with the reset token or the OAuth code the
redirect carries, to another host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def is_allowed_redirect(url: str, allow_list: list[str]) -> bool:
    try:
        target = urlsplit(url)
        port = target.port
    except ValueError:
        return False
    if not target.scheme or (target.scheme in ("http", "https") and not target.hostname):
        return False
    if target.scheme.lower() in ("javascript", "data", "file", "vbscript"):
        return False
    if target.scheme in ("http", "https") and "\\" in url:
        return False
    if not allow_list:
        return target.scheme in ("http", "https") and (target.hostname or "") in _LOCAL_HOSTS
    for entry in allow_list:
        try:
            allowed = urlsplit(entry)
            allowed_port = allowed.port
        except ValueError:
            continue
        if allowed.scheme.lower() != target.scheme.lower():
            continue
        if target.scheme in ("http", "https"):
            host_pattern = (allowed.netloc.rsplit("@", 1)[-1]).split(":")[0].lower()
            if "[" in allowed.netloc:
                host_pattern = allowed.netloc.split("]")[0] + "]"
            if not _host_matches(host_pattern, (target.hostname or "").lower()):
                continue
            if allowed_port != port:
                continue
            prefix = allowed.path.rstrip("/")
            if prefix and not (target.path == prefix or target.path.startswith(prefix + "/")):
                continue
            return True
        if url.startswith(entry):
            return True
    return False
