"""Who may call an `/api/auth` route, refused in InsForge's words.

InsForge guards its auth routes with three middlewares (`verifyToken`, `verifyAdmin`, `verifyUser` in its
`api/middlewares/auth.ts`), and clients and agents match on what they answer: `401 AUTH_INVALID_CREDENTIALS
"No token provided"`, `"No admin token provided"`, `"Invalid anon key"`, `401 AUTH_INVALID_API_KEY "Invalid
API key"`, `403 AUTH_UNAUTHORIZED "Admin access required"`, and for a token that fails verification (expired,
forged, not a JWT at all) `401 AUTH_UNAUTHORIZED "Invalid token"`, whichever middleware checked it. That
last code matters: `@insforge/sdk` refreshes the session and retries only on a 401 whose code is
`AUTH_UNAUTHORIZED`, so any other code signs a browser user out when their 15-minute token expires.

The request edge has already turned the credential into a `Principal` (or remembered why it is invalid);
these gates only decide which of those answers applies, from the credential's shape, as InsForge does. The
reason Kilnbase knows (an expired token, a session signed out) goes into `nextActions`.

Public flows (sign-in, refresh, sign-out, the email flows, OAuth callbacks) ignore the credential, as
InsForge's do: see `edge.public_actor`.
"""

from __future__ import annotations

from starlette.requests import Request

from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import actor_of, credential_error_of, principal_of
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

_SIGN_IN = "Send an access token as 'Authorization: Bearer <token>' (POST /api/auth/sessions signs in)."
_ADMIN = (
    "Send the project's API key (kilnbase keys) or a project admin's access token as "
    "'Authorization: Bearer ...'."
)
_API_KEY = "Check the API key (kilnbase keys prints it; it may have been rotated)."


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return header[len("Bearer ") :]


#: Keys rather than tokens: the project's API key and (Kilnbase's) agent keys.
_KEY_PREFIXES = ("ik_", "kba_")


def api_key_presented(request: Request) -> bool:
    """Whether the credential is a key (the API key, an agent key) rather than a token or the anon key."""
    bearer = _bearer(request)
    return (bearer is not None and bearer.startswith(_KEY_PREFIXES)) or bool(request.headers.get("x-api-key"))


def _refused(code: str, message: str, request: Request, fallback: str) -> ApiError:
    reason = credential_error_of(request)
    hint = f"The credential was refused: {reason}. {fallback}" if reason else fallback
    return ApiError(401, code, message, hint)


def _invalid_token(request: Request, fallback: str) -> ApiError:
    """A bearer that is not a valid access token: the code the SDK answers with a refresh and a retry."""
    return _refused("AUTH_UNAUTHORIZED", "Invalid token", request, fallback)


def _principal(request: Request) -> Principal | None:
    """The caller, or None when the credential presented is invalid."""
    try:
        return principal_of(request)
    except ApiError:
        return None


def token_actor(request: Request) -> Actor:
    """InsForge's `verifyToken`: a valid access token (a JWT, not a key) of any role, or 401."""
    bearer = _bearer(request)
    if bearer is None:
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "No token provided", _SIGN_IN)
    principal = _principal(request)
    if principal is None or bearer.startswith((*_KEY_PREFIXES, "anon_")):
        raise _invalid_token(request, _SIGN_IN)
    return actor_of(request, principal)


def user_actor(request: Request) -> Actor:
    """A signed-in user's access token, or 401 as InsForge's `/sessions/current` answers
    ("User not authenticated" for a token of another role)."""
    actor = token_actor(request)
    if actor.principal.db_role != "authenticated" or not actor.principal.user_id:
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "User not authenticated", "Sign in as a user first.")
    return actor


def admin_actor(request: Request) -> Actor:
    """InsForge's `verifyAdmin`: the API key, or a project admin's access token."""
    principal = _principal(request)
    if api_key_presented(request):
        if principal is None:
            raise ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", _API_KEY)
    elif _bearer(request) is None:
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "No admin token provided", _ADMIN)
    elif principal is None or principal.kind in (CredentialKind.ANON_KEY, CredentialKind.NONE):
        raise _invalid_token(request, _ADMIN)
    if not principal.is_admin:
        raise ApiError(403, "AUTH_UNAUTHORIZED", "Admin access required", _ADMIN)
    return actor_of(request, principal)


def caller_actor(request: Request) -> Actor:
    """InsForge's `verifyUser`, for sign-up: an API key, the anon key or a token, each refused in its own
    words when invalid. Unlike InsForge, no credential at all is the anonymous caller (a sign-up from a
    bare `curl` works), not "No token provided"."""
    principal = _principal(request)
    if principal is not None:
        return actor_of(request, principal)
    if api_key_presented(request):
        raise ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", _API_KEY)
    bearer = _bearer(request)
    if bearer is not None and bearer.startswith("anon_"):
        message = "Use the project's anon key (kilnbase keys prints it)."
        raise _refused("AUTH_INVALID_CREDENTIALS", "Invalid anon key", request, message)
    raise _invalid_token(request, _SIGN_IN)


def optional_token_actor(request: Request) -> Actor:
    """An optional credential on a public route (the device code lookup, where InsForge reads a bearer if one
    is sent): none is the anonymous caller, a valid one is its caller, and one that fails verification is
    refused as `verifyToken` refuses it rather than silently read as none."""
    principal = _principal(request)
    if principal is not None:
        return actor_of(request, principal)
    if api_key_presented(request):
        raise ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", _API_KEY)
    raise _invalid_token(request, _SIGN_IN)


def person_actor(request: Request) -> Actor:
    """`token_actor`, except that a valid key (the API key, an agent key) comes through as its caller, for
    the service to refuse in its own words: what only a person may do (approving a device) tells a key
    so, instead of calling it an invalid token."""
    if api_key_presented(request):
        principal = _principal(request)
        if principal is None:
            raise ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", _API_KEY)
        return actor_of(request, principal)
    return token_actor(request)
