"""Who may call an admin route, refused in InsForge's words: its `verifyAdmin` (`api/middlewares/auth.ts`),
which guards every admin route of its API, answers

- a key that is not the project's (or a live agent key's): `401 AUTH_INVALID_API_KEY "Invalid API key"`;
- no bearer at all: `401 AUTH_INVALID_CREDENTIALS "No admin token provided"`;
- a bearer that is no valid access token (the anon key, an expired or forged token): `401 AUTH_UNAUTHORIZED
  "Invalid token"`, the code on which `@insforge/sdk` refreshes a session and retries;
- a valid token that is not a project admin's (a signed-in user): `403 AUTH_UNAUTHORIZED "Admin access
  required"`.

The request edge has already turned the credential into a `Principal` (or remembered why it is invalid);
this only decides which of those answers applies, from the credential's shape. The reason Kilnbase knows
(an expired token, a session signed out) goes into `nextActions`. `/api/auth`'s other gates
(`auth.gate`) answer in the same words.
"""

from __future__ import annotations

from starlette.requests import Request

from kilnbase.http.errors import ApiError, not_admin
from kilnbase.http.request_context import actor_of, credential_error_of, principal_of
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

ADMIN_CREDENTIAL = (
    "Send the project's API key (kilnbase keys) or a project admin's access token as "
    "'Authorization: Bearer ...'."
)
CHECK_API_KEY = "Check the API key (kilnbase keys prints it; it may have been rotated)."
#: Keys rather than tokens: the project's API key and (Kilnbase's) agent keys.
KEY_PREFIXES = ("ik_", "kba_")


def bearer_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return header[len("Bearer ") :]


def api_key_presented(request: Request) -> bool:
    """Whether the credential is a key (the API key, an agent key) rather than a token or the anon key."""
    bearer = bearer_of(request)
    return (bearer is not None and bearer.startswith(KEY_PREFIXES)) or bool(request.headers.get("x-api-key"))


def valid_principal(request: Request) -> Principal | None:
    """The caller, or None when the credential presented is invalid."""
    try:
        return principal_of(request)
    except ApiError:
        return None


def credential_refused(code: str, message: str, request: Request, fallback: str) -> ApiError:
    """A 401, with why the credential was refused (when the edge knows) before what to do."""
    reason = credential_error_of(request)
    hint = f"The credential was refused: {reason}. {fallback}" if reason else fallback
    return ApiError(401, code, message, hint)


def invalid_token(request: Request, fallback: str) -> ApiError:
    """A bearer that is not a valid access token: the code the SDK answers with a refresh and a retry."""
    return credential_refused("AUTH_UNAUTHORIZED", "Invalid token", request, fallback)


def invalid_api_key() -> ApiError:
    return ApiError(401, "AUTH_INVALID_API_KEY", "Invalid API key", CHECK_API_KEY)


def _presented(request: Request) -> Principal:
    """The caller (no credential at all is the anonymous one), or a credential that failed verification
    refused: a key as a key, anything else as a token."""
    principal = valid_principal(request)
    if principal is None:
        raise invalid_api_key() if api_key_presented(request) else invalid_token(request, ADMIN_CREDENTIAL)
    return principal


def require_admin(request: Request) -> Principal:
    """The API key (or an agent key, whose scopes are checked where its route is), or a project admin's access
    token; anything else refused as `verifyAdmin` refuses it."""
    principal = _presented(request)
    if not principal.is_admin:
        raise not_admin(principal)
    return principal


def admin_actor(request: Request) -> Actor:
    """`require_admin`, as an Actor for the service call."""
    return actor_of(request, require_admin(request))


def audited_admin_caller(request: Request) -> Actor:
    """Any valid credential, for a service that refuses (and audits) a caller who is no admin; none at all
    is refused here, unaudited (a stranger's requests would otherwise fill the audit log), in `verifyAdmin`'s
    words."""
    principal = _presented(request)
    if principal.kind is CredentialKind.NONE:
        raise not_admin(principal)
    return actor_of(request, principal)
