"""InsForge's error shape for everything under `/api`: `{error, message, statusCode, nextActions?}`.

A client mistake gets a 4xx with a message that says what to do; an unexpected failure gets a bare 500
(logged with its traceback on the server, never sent to the client). What no route answered itself (an
unknown path, a method the path does not take, an unexpected error) under the OpenAI-compatible `/v1/` is
answered in OpenAI's shape instead, `{error: {message, type, param, code}}`, which OpenAI's SDKs read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kilnbase.db.availability import RETRY_AFTER, DatabaseUnavailable, is_unavailable
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

log = logging.getLogger("kilnbase.errors")

_STATUS_CODES = {
    400: "INVALID_INPUT",
    401: "AUTH_UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "INVALID_INPUT",
    409: "ALREADY_EXISTS",
    413: "INVALID_INPUT",
    415: "INVALID_INPUT",
    429: "RATE_LIMITED",
}
_AGAINST_REFERENCE = "against the API reference in the README."
#: For a call that needs admin rights.
ADMIN_ONLY = "Use the project's API key (kilnbase keys) or sign in as the project admin."


class ApiError(Exception):
    """Raise from a route or a service to answer with InsForge's error shape.

    `failed` says the action was tried and failed (the database failed the statement, a check of the code
    failed), as opposed to being refused before it ran: the subclasses for those set it, and the audit trail
    tells the two apart."""

    failed = False

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        next_actions: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.next_actions = next_actions
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str, next_actions: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message, "statusCode": status}
    if next_actions:
        body["nextActions"] = next_actions
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    next_actions: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(error_body(status, code, message, next_actions)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


#: The prefix of the OpenAI-compatible surface, whose errors take OpenAI's shape.
OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def _answer(
    request: Request,
    status: int,
    code: str,
    message: str,
    next_actions: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """`error_response`, or the same error in OpenAI's shape for a path under `/v1/` (the code in lower
    case, the next actions after the message, as OpenAI's messages say what to do)."""
    if not request.scope["path"].startswith(OPENAI_PREFIX):
        return error_response(status, code, message, next_actions, headers)
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    text = f"{message} {next_actions}" if next_actions else message
    body = {"error": {"message": text, "type": kind, "param": None, "code": code.lower()}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _answer(request, exc.status, exc.code, exc.message, exc.next_actions, exc.headers or None)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "INVALID_INPUT" if exc.status_code < 500 else "INTERNAL_ERROR")
    if exc.status_code == 404:
        message = f"Route {request.method} {request.url.path} not found"
        hint = f"Check the path and the method {_AGAINST_REFERENCE}"
        missing = _missing_module(request)
        if missing is not None:
            message += f": this Kilnbase server has no {missing} API (nothing is served under /api/{missing})"
            hint = f"The {missing} capability is not part of this server yet; see GET /api/docs for what is."
        return _answer(request, 404, code, message, hint)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    allowed = (exc.headers or {}).get("Allow")
    if exc.status_code == 405 and allowed:
        hint = f"This path takes {allowed} (the Allow header); check the method {_AGAINST_REFERENCE}"
    else:
        hint = f"Check the request {_AGAINST_REFERENCE}"
    return _answer(request, exc.status_code, code, message, hint, exc.headers)


def _missing_module(request: Request) -> str | None:
    """The module of an `/api/<module>/...` path when the app serves nothing under `/api/<module>` at all
    (a capability this server does not have: the official clients call them, and should say so plainly)."""
    parts = request.url.path.split("/", 3)
    if len(parts) < 3 or parts[1] != "api" or not parts[2]:
        return None
    prefix = f"/api/{parts[2]}"
    for route in getattr(request.app, "routes", ()):
        path = getattr(route, "path", "")
        if path == prefix or path.startswith(prefix + "/"):
            return None
    return parts[2]


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(
        request,
        500,
        "INTERNAL_ERROR",
        "An unexpected error occurred; it has been logged.",
        "Retry later; if it persists, check the server log.",
    )


def database_unavailable(exc: Exception) -> ApiError:
    """The answer to a request the database could not serve because it was out of reach (or no connection
    came free in time): 503, for the caller to retry, never a 500 or a 4xx."""
    if isinstance(exc, DatabaseUnavailable):
        message = f"The database is unavailable: {exc}."
    else:
        message = "The database is unavailable right now."
    return ApiError(
        503,
        "DATABASE_UNAVAILABLE",
        message,
        "Retry shortly; GET /api/health says when the database answers again. If this lasts, the server's "
        "log says why (operators: check that PostgreSQL is running and reachable).",
        headers={"Retry-After": RETRY_AFTER},
    )


async def handle_database_error(request: Request, exc: Exception) -> Response:
    """A database error no route turned into an answer: 503 when the database was out of reach (logged as
    one line: `db/availability.py` says when it went and came back), else an unexpected error."""
    if not is_unavailable(exc):
        return await handle_unexpected(request, exc)
    log.warning(
        "%s %s: the database is unavailable (%s)", request.method, request.url.path, type(exc).__name__
    )
    return await handle_api_error(request, database_unavailable(exc))


async def handle_data_error(request: Request, exc: Exception) -> Response:
    """A value the database cannot take, that no route turned into an answer: a client's mistake (text
    with NUL, which psycopg refuses before sending; a class-22 data exception), so 400 with the database's
    reason, as PostgREST answers class 22, never a 500."""
    assert isinstance(exc, psycopg.DataError)
    reason = (exc.diag.message_primary if exc.sqlstate else None) or str(exc).splitlines()[0]
    log.info("%s %s: a value the database cannot take (%s)", request.method, request.url.path, exc.sqlstate)
    return _answer(
        request,
        400,
        "INVALID_INPUT",
        f"A value cannot be stored: {reason}",
        "Fix the value the message names and retry.",
    )


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    psycopg.OperationalError: handle_database_error,
    psycopg.DataError: handle_data_error,
    Exception: handle_unexpected,
}


def not_admin(principal: Principal) -> ApiError:
    """A valid credential that is no admin's, refused as InsForge's `verifyAdmin` refuses it (see
    `http.admin_gate`): none at all 401 "No admin token provided"; the anon key, which is no access token,
    401 "Invalid token"; a signed-in user's token 403 "Admin access required"."""
    if principal.kind is CredentialKind.NONE:
        return ApiError(401, "AUTH_INVALID_CREDENTIALS", "No admin token provided", ADMIN_ONLY)
    if principal.kind is CredentialKind.ANON_KEY:
        return ApiError(401, "AUTH_UNAUTHORIZED", "Invalid token", ADMIN_ONLY)
    return ApiError(403, "AUTH_UNAUTHORIZED", "Admin access required", ADMIN_ONLY)


def require_admin_actor(actor: Actor) -> None:
    """For services and tools whose every call needs admin rights."""
    if not actor.is_admin:
        raise not_admin(actor.principal)


def refuse_agent_keys(actor: Actor, message: str, next_actions: str) -> None:
    """403 for an agent key, whatever its scopes: for what would hand an agent a credential or an identity
    past its scopes (the API key, a provider, an S3 key, another agent key), or send data where it chooses."""
    if actor.principal.agent is not None:
        raise ApiError(403, "FORBIDDEN", message, next_actions)


def require_person(actor: Actor, message: str, next_actions: str) -> None:
    """An admin who is not an agent key (`require_admin_actor`, then `refuse_agent_keys`)."""
    require_admin_actor(actor)
    refuse_agent_keys(actor, message, next_actions)


Handler = Callable[[Request, Exception], Awaitable[Response]]


class ErrorBoundary:
    """Where an exception a route raised becomes its answer: the handler of its class (or of its status,
    for an `HTTPException`), else the handler of `Exception`, whose error is then raised on for the server
    to log, as Starlette's outermost layer does.

    Starlette builds two layers for this around every request (one for unexpected errors, one for the
    handled ones), each a coroutine frame and a wrapped `send`, and each passed through again every time
    the request's task resumes. Here it is one `try` in the request-context layer, which wraps every
    request anyway. Starlette's request/response routes keep handling their own errors, with the handlers
    read from the scope (`for_routes`)."""

    def __init__(self, handlers: Mapping[Any, Handler]) -> None:
        self.unexpected = handlers.get(Exception) or handlers.get(500)
        self.by_class = {k: v for k, v in handlers.items() if isinstance(k, type) and k is not Exception}
        self.by_status = {k: v for k, v in handlers.items() if isinstance(k, int) and k != 500}
        #: What Starlette's routes read from `scope["starlette.exception_handlers"]`.
        self.for_routes = (self.by_class, self.by_status)

    async def answer(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> bool:
        """Send the answer to `exc` (the response must not have started); True when `exc` was unexpected
        and is to be raised on."""
        handler = self.by_status.get(exc.status_code) if isinstance(exc, HTTPException) else None
        if handler is None:
            handler = next((self.by_class[k] for k in type(exc).__mro__ if k in self.by_class), None)
        unexpected = handler is None
        request = Request(scope, receive, send)
        if handler is not None:
            response = await handler(request, exc)
            exc.__traceback__ = None  # a reused exception would gather tracebacks across requests
        elif self.unexpected is not None:
            response = await self.unexpected(request, exc)
        else:
            response = Response("Internal Server Error", status_code=500, media_type="text/plain")
        await response(scope, receive, send)
        return unexpected
