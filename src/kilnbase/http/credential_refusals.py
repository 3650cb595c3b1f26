"""A credential refused in InsForge's words, chosen by the credential's shape as InsForge chooses them.

InsForge guards its routes with three middlewares (`verifyUser`, `verifyAdmin`, `verifyToken` in its
`api/middlewares/auth.ts`). Each dispatches on the credential's shape, never by falling back on failure, and
clients and agents match on what they answer:

- a key (`Bearer ik_...` or `x-api-key`) that is not the project's: `401 AUTH_INVALID_API_KEY "Invalid API
  key"`;
- no bearer at all: `401 AUTH_INVALID_CREDENTIALS "No token provided"` (`verifyAdmin`: "No admin token
  provided", `http.errors.not_admin`);
- `Bearer anon_...` that is not the project's anon key, where the anon key is accepted (`verifyUser`):
  `401 AUTH_INVALID_CREDENTIALS "Invalid anon key"`;
- any other bearer that fails verification (expired, forged, signed out, not a JWT at all): `401
  AUTH_UNAUTHORIZED "Invalid token"`, the code on which `@insforge/sdk` refreshes a session and retries.

The request edge has already turned the credential into a `Principal`, or remembered why it is invalid
(`CREDENTIAL_ERROR` in the scope); the reason Kilnbase knows goes into `nextActions`, after which what to do.
Kilnbase's agent keys (`kba_...`) are keys, as the API key is.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from kilnbase.http.errors import ApiError

#: Where the request edge keeps why the credential presented was refused (absent when it was not).
CREDENTIAL_ERROR = "kilnbase.credential_error"
#: Keys rather than tokens: the project's API key and (Kilnbase's) agent keys.
KEY_PREFIXES = ("ik_", "kba_")
ANON_KEY_PREFIX = "anon_"
CHECK_API_KEY = "Check the API key (kilnbase keys prints it; it may have been rotated)."
#: `verifyUser`'s routes: what any credential is.
ANY_CREDENTIAL = (
    "Send the anon key, an access token or the API key as 'Authorization: Bearer ...' "
    "(kilnbase keys prints the keys; POST /api/auth/sessions signs in)."
)
CHECK_ANON_KEY = "Use the project's anon key (kilnbase keys prints it)."


def _presented(scope: Scope) -> tuple[str | None, bool]:
    """The `Authorization: Bearer` credential (None: no header, or another scheme), and whether an
    `x-api-key` was sent, from one read of the headers."""
    headers = Headers(scope=scope)
    header = headers.get("authorization")
    bearer = header[len("Bearer ") :] if header is not None and header.startswith("Bearer ") else None
    return bearer, bool(headers.get("x-api-key"))


def bearer_in(scope: Scope) -> str | None:
    """The `Authorization: Bearer` credential, or None (no header, or another scheme)."""
    return _presented(scope)[0]


def _is_key(bearer: str | None, api_key_header: bool) -> bool:
    return (bearer is not None and bearer.startswith(KEY_PREFIXES)) or api_key_header


def key_presented(scope: Scope) -> bool:
    """Whether the credential is a key (the API key, an agent key) rather than a token or the anon key."""
    return _is_key(*_presented(scope))


def credential_refused(code: str, message: str, scope: Scope, fallback: str) -> ApiError:
    """A 401, with why the credential was refused (when the edge knows) before what to do."""
    reason = scope.get(CREDENTIAL_ERROR)
    hint = f"The credential was refused: {reason}. {fallback}" if reason else fallback
    return ApiError(401, code, message, hint)


def invalid_token(scope: Scope, fallback: str) -> ApiError:
    """A bearer that is not a valid access token: the code the SDK answers with a refresh and a retry."""
    return credential_refused("AUTH_UNAUTHORIZED", "Invalid token", scope, fallback)


def invalid_api_key() -> ApiError:
    return ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", CHECK_API_KEY)


def no_token(fallback: str) -> ApiError:
    return ApiError(401, "AUTH_INVALID_CREDENTIALS", "No token provided", fallback)


def refused_as_verify_user(scope: Scope) -> ApiError:
    """What `verifyUser` answers for the credential of a request that presented none valid: a key as a key,
    the anon key's shape as the anon key, no bearer as no token, and anything else as a token."""
    bearer, api_key_header = _presented(scope)
    if _is_key(bearer, api_key_header):
        return invalid_api_key()
    if bearer is None:
        return no_token(ANY_CREDENTIAL)
    if bearer.startswith(ANON_KEY_PREFIX):
        return credential_refused("AUTH_INVALID_CREDENTIALS", "Invalid anon key", scope, CHECK_ANON_KEY)
    return invalid_token(scope, ANY_CREDENTIAL)
