"""`Idempotency-Key` on every mutating route: a retry gets the first response back instead of running the
request again, as Stripe's API and the IETF draft (draft-ietf-httpapi-idempotency-key-header) describe.

A POST, PUT, PATCH or DELETE that carries the header is hashed (method, path, query, body) and the key is
claimed for the caller's credential and cookies (`db/idempotency.py`). The first call runs and its response
(up to 1 MiB) is kept for 24 hours; a retry with the same key and request gets it back with
`Idempotent-Replayed: true`; the same key with another request is 409 `IDEMPOTENCY_KEY_REUSED`, and a retry
while the first call still runs is 409 `IDEMPOTENCY_KEY_IN_USE` with `Retry-After`. A 5xx, a failure, or a
response too large to keep is not kept, so a retry runs again. A request without the header costs one header
scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kilnbase.db.idempotency import MAX_KEY_LENGTH, MAX_STORED_BYTES, IdempotencyKeys, Stored, request_digest
from kilnbase.http.buffered_body import read_all, replaying
from kilnbase.http.errors import error_response
from kilnbase.http.request_context import headers_in, principal_or_none
from kilnbase.identity.principal import Principal

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HEADER = b"idempotency-key"
_COOKIE = b"cookie"
#: Headers of a kept response that a replay repeats (framing headers are the server's to write again).
_SKIPPED = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})


def _key_in(scope: Scope) -> bytes | None:
    value = headers_in(scope).get(_HEADER)
    return None if value is None else bytes(value)


def key_owner(scope: Scope, principal: Principal) -> str:
    """Whose key this is: the credential, and the cookies the request carries. A cookie is a credential too
    (a web client's refresh token rides in one, beside the anon key or no credential at all, which every
    anonymous caller shares): without it, anyone who learnt a key would be replayed its owner's session."""
    owner = principal.credential_id
    if _COOKIE not in headers_in(scope):
        return owner
    cookies = hashlib.sha256()
    for name, value in scope["headers"]:  # every Cookie header (HTTP/2 may split them), not only the last
        if name == _COOKIE:
            cookies.update(bytes(value) + b"\n")
    return f"{owner}:cookie:{cookies.hexdigest()}"


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, keys: IdempotencyKeys) -> None:
        self.app = app
        self.keys = keys

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine: a request without the header is handed on as it is, so this layer is not one
        more frame that every resumption of the request's task passes through."""
        if scope["type"] != "http" or scope["method"] not in _MUTATING:
            return self.app(scope, receive, send)
        raw_key = _key_in(scope)
        principal = principal_or_none(scope)
        if raw_key is None or principal is None:  # no key; or a bad credential, which the route refuses
            return self.app(scope, receive, send)
        return self._keyed(scope, receive, send, raw_key, principal)

    async def _keyed(
        self, scope: Scope, receive: Receive, send: Send, raw_key: bytes, principal: Principal
    ) -> None:
        key = raw_key.decode("latin-1")
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            await error_response(
                400,
                "INVALID_INPUT",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                "Send a fresh random value (a UUID) for each new request, and the same one for its retries.",
            )(scope, receive, send)
            return
        body = await read_all(receive)
        digest = request_digest(
            scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body
        )
        owner = key_owner(scope, principal)
        claim = await self.keys.claim(owner, key, digest)
        if claim.outcome == "mismatch":
            await error_response(
                409,
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was used with a different request.",
                "Use a new key for a new request; reuse a key only to retry the same request.",
            )(scope, receive, send)
        elif claim.outcome == "running":
            await error_response(
                409,
                "IDEMPOTENCY_KEY_IN_USE",
                "A request with this Idempotency-Key is still running.",
                "Retry in a moment: you will get its response.",
                headers={"Retry-After": "1"},
            )(scope, receive, send)
        elif claim.outcome == "lost":
            await error_response(
                409,
                "IDEMPOTENCY_RESPONSE_LOST",
                "The request with this Idempotency-Key ran, but its response can no longer be read: the "
                "server's ENCRYPTION_KEY changed since.",
                "Check what the first request did (read what it created or changed) rather than retrying it; "
                "send a new key only to run the request again.",
            )(scope, receive, send)
        elif claim.stored is not None:
            await _replay(claim.stored, send)
        else:
            await self._run(scope, body, receive, send, owner, key)

    async def _run(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, owner: str, key: str
    ) -> None:
        status = 500
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                    for n, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body" and size <= MAX_STORED_BYTES:
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
            await send(message)

        try:
            await self.app(scope, replaying(body, receive), capture)
        except BaseException:
            await self.keys.release(owner, key)
            raise
        if status >= 500 or size > MAX_STORED_BYTES:
            await self.keys.release(owner, key)
        else:
            kept = [(n, v) for n, v in headers if n.lower() not in _SKIPPED]
            await self.keys.save(owner, key, Stored(status, kept, b"".join(chunks)))


async def _replay(stored: Stored, send: Send) -> None:
    headers: list[Any] = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})
