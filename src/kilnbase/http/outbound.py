"""Calls Kilnbase makes to a URL someone configured (a schedule's target, a database webhook's receiver):
bounded in time (`asyncio.timeout` over the whole call, beside the client's own connect and read limits) and
in what is read of the answer, redirects not followed; and the `sha256=<hex>` HMAC that signs a webhook.

What a failure was, in a line fit for a log, is `describe`; the caller decides what to do with it (log it,
try again). Nothing here knows a capability.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping

import httpx


def hmac_sha256(secret: str, data: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, data): what an `X-InsForge-Signature` header carries."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def client(timeout_seconds: float, connect_seconds: float) -> httpx.AsyncClient:
    """A client for such calls: the limits given, no redirects followed, no proxy taken from the
    environment (a receiver is called where it was configured to be)."""
    limits = httpx.Timeout(timeout_seconds, connect=connect_seconds)
    return httpx.AsyncClient(timeout=limits, follow_redirects=False, trust_env=False)


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    headers: Mapping[str, str],
    content: bytes | None,
    max_response_bytes: int,
    timeout_seconds: float | None = None,
    extensions: Mapping[str, str] | None = None,
) -> int:
    """Make the call; the answer's status, once at most `max_response_bytes` of it was read (and dropped).
    Raises `TimeoutError` past `timeout_seconds` (a caller that bounds more than the call, as a schedule's
    run bounds its name's resolution too, leaves it out and bounds the whole), `httpx.HTTPError` when no
    answer came. `extensions` are httpx's (`sni_hostname`, for a call dialled to a checked address)."""
    async with asyncio.timeout(timeout_seconds):
        async with http.stream(
            method, url, headers=dict(headers), content=content, extensions=dict(extensions or {})
        ) as answer:
            read = 0
            async for chunk in answer.aiter_raw():
                read += len(chunk)
                if read >= max_response_bytes:
                    break
    return answer.status_code


def describe(exc: BaseException) -> str:
    """What went wrong, briefly: the error's class and first line."""
    if isinstance(exc, httpx.ConnectError):
        return f"Connection failed: {str(exc).strip() or 'refused'}".splitlines()[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
