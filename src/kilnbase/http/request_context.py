"""Per-request plumbing in one layer: limits on what a client may send, CORS, the caller, the client's
address, the answer to an error, and one structured log line per request.

A pure ASGI middleware (no `BaseHTTPMiddleware`), because it sits on every request's path. The principal is
resolved here and kept in the scope; an invalid credential is remembered, not answered, so that public
routes (health, JWKS) still answer, and every route that needs a caller fails closed with 401.

Limits come first: the request line and headers together (431), and the body, counted while it streams in
(413 with the limit and the setting that changes it), so that no endpoint ever buffers more than its surface
allows, whatever it does with the body after.

CORS is Starlette's middleware, consulted only when the request has an `Origin` (a browser's): the request
headers are read here anyway, and a request without an origin needs nothing from CORS but `Vary: Origin`.

An exception a route raises is answered here (`http.errors.ErrorBoundary`), inside CORS for a browser's
request, so that its answer is readable there too; the app has no error layers of Starlette's own. A client
that closes the connection while its body is still coming (Starlette's `ClientDisconnect`) is no error of
the server's: nothing is answered (no one is left to read it), nothing is raised for the server to log with
a traceback, and the request line says 499, nginx's "client closed request".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kilnbase.http.client_address import Network, client_address, forwarded_chain
from kilnbase.http.credential_refusals import (
    ANY_CREDENTIAL,
    CREDENTIAL_ERROR,
    no_token,
    refused_as_verify_user,
)
from kilnbase.http.errors import EXCEPTION_HANDLERS, ErrorBoundary, Handler, error_body
from kilnbase.http.responses import send_body
from kilnbase.identity.actor import Actor
from kilnbase.identity.agent_keys import AgentKey
from kilnbase.identity.principal import (
    ANONYMOUS,
    CredentialError,
    CredentialResolver,
    KeysToFetch,
    Principal,
)
from kilnbase.structured_log import log_request

_PRINCIPAL = "kilnbase.principal"
_HEADERS = "kilnbase.headers"
_CLIENT_IP = "kilnbase.client_ip"
_TRUSTED_PROXIES = "kilnbase.trusted_proxies"
#: Where Starlette's request/response routes look for the exception handlers.
_HANDLERS = "starlette.exception_handlers"
#: The status a request whose client left before its answer is logged with (nginx's; never sent).
CLIENT_CLOSED_REQUEST = 499
#: Response headers a browser's script may read (beyond the safelisted ones): PostgREST's own list, with
#: Preference-Applied (the records API); what tus-js-client reads (resumable uploads); and Kilnbase's
#: (validators and downloads, limits, idempotent replays, a function's log id, the model gateway's cache
#: and cost, and `X-Should-Retry`, which the OpenAI SDK reads before it retries).
_POSTGREST_EXPOSED = ("Content-Range", "Content-Location", "Location", "Range-Unit", "Preference-Applied")
_TUS_EXPOSED = (
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
)
_KILNBASE_EXPOSED = (
    "ETag",
    "Content-Disposition",
    "Retry-After",
    "Idempotent-Replayed",
    "X-Kilnbase-Request-Id",
    "X-Kilnbase-Cache",
    "X-Kilnbase-Cost-Usd",
    "X-Should-Retry",
)
#: Any origin, with credentials (the origin is reflected, never `*`), as InsForge allows.
CORS_POLICY: dict[str, Any] = {
    "allow_origin_regex": r".*",
    "allow_credentials": True,
    "allow_methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    "allow_headers": ["*"],
    "expose_headers": [*_POSTGREST_EXPOSED, *_TUS_EXPOSED, *_KILNBASE_EXPOSED],
    "max_age": 86400,
}
_VARY_ORIGIN = (b"vary", b"Origin")
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class BodyLimit:
    """A body limit in bytes, and the setting that changes it (named in the 413's message)."""

    bytes: int
    setting: str


class BodyTooLarge(Exception):
    """Raised from `receive` when a body passes its limit; the middleware answers 413."""

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(f"body larger than {limit.bytes} bytes")
        self.limit = limit


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB" if size >= 1024 * 1024 else f"{size} bytes"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        resolver: CredentialResolver,
        body_limit_for: Callable[[str], BodyLimit],
        max_header_bytes: int,
        trusted_proxies: Sequence[Network] = (),
        on_request: Callable[[dict[str, Any]], None] | None = None,
        exception_handlers: Mapping[Any, Handler] = EXCEPTION_HANDLERS,
    ) -> None:
        self.app = app
        #: Given each request's log fields after it ends (the request log kept for `GET /api/logs`).
        self.on_request = on_request
        #: Every request's one error boundary (the app has no Starlette error layers: `KilnbaseApp`).
        self.errors = ErrorBoundary(exception_handlers)
        self.route_handlers = self.errors.for_routes
        self.cors = CORSMiddleware(self._guarded, **CORS_POLICY)
        self.resolver = resolver
        self.body_limit_for = body_limit_for
        self.max_header_bytes = max_header_bytes
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            scope[_HANDLERS] = self.route_handlers
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = scope["headers"]
        # One pass in C each: the headers by name (the last of a repeated one wins) and their size.
        named = scope[_HEADERS] = dict(headers)
        header_bytes = (
            sum(map(len, chain.from_iterable(headers)))
            + len(scope["raw_path"] if scope.get("raw_path") else scope["path"])
            + len(scope["query_string"])
        )
        origin = named.get(b"origin")
        status = 0  # until the response starts
        principal: Principal | None = None

        def send_wrapper(message: Message) -> Awaitable[None]:
            # (Not a coroutine: it hands the message on, and a coroutine would be made and finished for
            # each of a response's messages.)
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if origin is None:  # (with an origin, CORS writes the header)
                    message["headers"] = [*message.get("headers", ()), _VARY_ORIGIN]
            return send(message)

        try:
            if header_bytes > self.max_header_bytes:
                await _refuse(
                    send_wrapper,
                    scope,
                    431,
                    f"The request line and headers are larger than {self.max_header_bytes} bytes.",
                    "Send fewer or shorter headers (KILNBASE_MAX_HEADER_BYTES sets the limit).",
                )
                return
            limit = self.body_limit_for(scope["path"])
            content_length = named.get(b"content-length")
            if content_length is not None:
                # (Bytes: `isdigit` is ASCII. More than 19 digits is past any limit, and past 4,300 `int`
                # refuses them: a 500.)
                if not content_length.isdigit():
                    declared = -1
                else:
                    declared = int(content_length) if len(content_length) < 20 else limit.bytes + 1
                if declared > limit.bytes:
                    await _refuse_body(send_wrapper, scope, limit)
                    return
                bounded = receive if declared >= 0 else _bounded(receive, limit)
            else:
                bounded = _bounded(receive, limit)
            authorization, api_key = named.get(b"authorization"), named.get(b"x-api-key")
            try:
                try:
                    principal = self.resolver.resolve(
                        None if authorization is None else authorization.decode("latin-1"),
                        None if api_key is None else api_key.decode("latin-1"),
                    )
                except KeysToFetch as pending:  # (an external provider's token: see `principal.py`)
                    principal = await pending.resolved()
            except CredentialError as exc:
                scope[CREDENTIAL_ERROR] = str(exc)
            scope[_PRINCIPAL] = principal
            scope[_HANDLERS] = self.route_handlers
            if self.trusted_proxies:  # (decided on first use: most requests never ask)
                scope[_TRUSTED_PROXIES] = self.trusted_proxies
            try:
                await (self.app if origin is None else self.cors)(scope, bounded, send_wrapper)
            except BodyTooLarge as exc:
                if status:  # the response had started: nothing more can be said
                    raise
                await _refuse_body(send_wrapper, scope, exc.limit)
        except ClientDisconnect:
            # The client left: an INFO request line with 499 (or the status already sent) says so.
            status = status or CLIENT_CLOSED_REQUEST
        except Exception as exc:
            # Once the response has started nothing more can be said: the server drops the connection. An
            # unexpected error is raised on in any case, for the server to log.
            if status or await self.errors.answer(scope, receive, send_wrapper, exc):
                raise
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status or 500,
                # In ms to two places: `round(x, 2)` on a float goes through decimal text, 50 times dearer.
                "duration_ms": round((time.perf_counter() - started) * 100_000) / 100,
                "role": principal.db_role if principal else ("invalid" if _PRINCIPAL in scope else "-"),
            }
            log_request(fields)
            if self.on_request is not None:
                self.on_request(fields)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, for a browser's request: inside CORS, so that an error's answer carries CORS's headers
        as any other answer does."""
        started = False

        def sender(message: Message) -> Awaitable[None]:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            return send(message)

        try:
            await self.app(scope, receive, sender)
        except ClientDisconnect:
            raise  # (nothing to answer: `__call__` logs it)
        except Exception as exc:
            if started or await self.errors.answer(scope, receive, sender, exc):
                raise


def _bounded(receive: Receive, limit: BodyLimit) -> Receive:
    """`receive`, raising BodyTooLarge as soon as the body read so far passes `limit`."""
    seen = 0

    async def receive_bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit.bytes:
                raise BodyTooLarge(limit)
        return message

    return receive_bounded


async def _refuse_body(send: Send, scope: Scope, limit: BodyLimit) -> None:
    await _refuse(
        send,
        scope,
        413,
        f"The request body is larger than {_megabytes(limit.bytes)}.",
        f"Send a smaller body, or raise {limit.setting}.",
    )


async def _refuse(send: Send, scope: Scope, status: int, message: str, next_actions: str) -> None:
    """A limit's refusal, in the error shape of the surface the path belongs to."""
    if scope["path"].startswith("/v1/"):
        code = "request_too_large" if status == 413 else "headers_too_large"
        body: dict[str, Any] = {
            "error": {"message": f"{message} {next_actions}", "type": "invalid_request_error", "param": None}
        }
        body["error"]["code"] = code
    else:
        body = error_body(
            status, "PAYLOAD_TOO_LARGE" if status == 413 else "HEADERS_TOO_LARGE", message, next_actions
        )
    headers = [_JSON, (b"connection", b"close")]
    await send_body(send, status, headers, orjson.dumps(body), head=scope["method"] == "HEAD")


def headers_in(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, the last of a repeated one winning: built once per
    request, by this middleware, or here for a scope that did not pass through it."""
    named: dict[bytes, bytes] | None = scope.get(_HEADERS)
    if named is None:
        named = scope[_HEADERS] = dict(scope["headers"])
    return named


def principal_of(request: Request) -> Principal:
    """The caller, or 401 when a credential was presented and is invalid. No credential is anon."""
    return principal_in(request.scope)


def principal_in(scope: Scope) -> Principal:
    """`principal_of` for plain ASGI endpoints: a credential that failed verification is refused in the words
    of InsForge's `verifyUser` (`http.credential_refusals`)."""
    principal: Principal | None = scope.get(_PRINCIPAL, ANONYMOUS)
    if principal is None:
        raise refused_as_verify_user(scope)
    return principal


def credential_error_of(request: Request) -> str | None:
    """Why the credential presented was refused (None when it was valid or absent)."""
    reason: str | None = request.scope.get(CREDENTIAL_ERROR)
    return reason


def principal_or_none(scope: Scope) -> Principal | None:
    """The caller, or None when the credential presented was invalid (never raises)."""
    principal: Principal | None = scope.get(_PRINCIPAL, ANONYMOUS)
    return principal


def agent_in(scope: Scope) -> AgentKey | None:
    """The agent key behind the request's credential, if any (never raises: an invalid credential is
    refused where a route asks for the principal)."""
    principal: Principal | None = scope.get(_PRINCIPAL, ANONYMOUS)
    return principal.agent if principal is not None else None


def client_ip(request: Request) -> str | None:
    """The client's address (`http.client_address`'s rule), or None when the peer is not an IP."""
    return client_ip_in(request.scope)


def client_ip_in(scope: Scope) -> str | None:
    """Decided once per request, when first asked."""
    if _CLIENT_IP not in scope:
        scope[_CLIENT_IP] = client_address(scope, scope.get(_TRUSTED_PROXIES, ()))
    ip: str | None = scope[_CLIENT_IP]
    return ip


def forwarded_chain_in(scope: Scope) -> list[str]:
    """The client's address and the trusted proxies between it and us, the client first (`client_address`'s
    rule), for a request Kilnbase passes on."""
    return forwarded_chain(scope, scope.get(_TRUSTED_PROXIES, ()))


def actor_of(request: Request, principal: Principal | None = None) -> Actor:
    """The caller as services take it: principal, client address, user agent."""
    return Actor(
        principal if principal is not None else principal_of(request),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def require_credential(request: Request) -> Principal:
    """A caller that presented a valid credential of any kind (InsForge's `verifyUser`)."""
    return credential_in(request.scope)


def credential_in(scope: Scope) -> Principal:
    """`require_credential` for plain ASGI endpoints: none at all is refused as `verifyUser` refuses it."""
    principal = principal_in(scope)
    if principal is ANONYMOUS:
        raise no_token(ANY_CREDENTIAL)
    return principal
