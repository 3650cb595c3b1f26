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

from kilnbase.http.credential_refusals import invalid_api_key, invalid_token, key_presented
from kilnbase.http.errors import ApiError, not_admin
from kilnbase.http.request_context import actor_of, principal_of
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

ADMIN_CREDENTIAL = (
    "Send the project's API key (kilnbase keys) or a project admin's access token as "
    "'Authorization: Bearer ...'."
)


def valid_principal(request: Request) -> Principal | None:
    """The caller, or None when the credential presented is invalid."""
    try:
        return principal_of(request)
    except ApiError:
        return None


def _presented(request: Request) -> Principal:
    """The caller (no credential at all is the anonymous one), or a credential that failed verification
    refused: a key as a key, anything else as a token."""
    principal = valid_principal(request)
    if principal is None:
        if key_presented(request.scope):
            raise invalid_api_key()
        raise invalid_token(request.scope, ADMIN_CREDENTIAL)
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
