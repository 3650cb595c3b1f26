"""Who may call an `/api/auth` route, refused in InsForge's words.

InsForge guards its auth routes with three middlewares (`verifyToken`, `verifyAdmin`, `verifyUser` in its
`api/middlewares/auth.ts`), and clients and agents match on what they answer: `401 AUTH_INVALID_CREDENTIALS
"No token provided"`, `"No admin token provided"`, `"Invalid anon key"`, `401 AUTH_INVALID_API_KEY "Invalid
API key"`, `403 AUTH_UNAUTHORIZED "Admin access required"`, and for a token that fails verification (expired,
forged, not a JWT at all) `401 AUTH_UNAUTHORIZED "Invalid token"`, whichever middleware checked it. That
last code matters: `@insforge/sdk` refreshes the session and retries only on a 401 whose code is
`AUTH_UNAUTHORIZED`, so any other code signs a browser user out when their 15-minute token expires.

The request edge has already turned the credential into a `Principal` (or remembered why it is invalid);
these gates only decide which of those answers applies, from the credential's shape, as InsForge does
(`http.credential_refusals`, which every route that needs a credential shares). The reason Kilnbase knows
(an expired token, a session signed out) goes into `nextActions`.

`verifyAdmin`'s answers are `http.admin_gate`'s, which every admin route of the API shares. Public flows
(sign-in, refresh, sign-out, the email flows, OAuth callbacks) ignore the credential, as InsForge's do: see
`edge.public_actor`.
"""

from __future__ import annotations

from starlette.requests import Request

from kilnbase.http.admin_gate import valid_principal
from kilnbase.http.credential_refusals import (
    ANON_KEY_PREFIX,
    KEY_PREFIXES,
    bearer_in,
    invalid_api_key,
    invalid_token,
    key_presented,
    no_token,
    refused_as_verify_user,
)
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import actor_of
from kilnbase.identity.actor import Actor

_SIGN_IN = "Send an access token as 'Authorization: Bearer <token>' (POST /api/auth/sessions signs in)."


def token_actor(request: Request) -> Actor:
    """InsForge's `verifyToken`: a valid access token (a JWT, not a key) of any role, or 401."""
    bearer = bearer_in(request.scope)
    if bearer is None:
        raise no_token(_SIGN_IN)
    principal = valid_principal(request)
    if principal is None or bearer.startswith((*KEY_PREFIXES, ANON_KEY_PREFIX)):
        raise invalid_token(request.scope, _SIGN_IN)
    return actor_of(request, principal)


def user_actor(request: Request) -> Actor:
    """A signed-in user's access token, or 401 as InsForge's `/sessions/current` answers
    ("User not authenticated" for a token of another role)."""
    actor = token_actor(request)
    if actor.principal.db_role != "authenticated" or not actor.principal.user_id:
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "User not authenticated", "Sign in as a user first.")
    return actor


def caller_actor(request: Request) -> Actor:
    """InsForge's `verifyUser`, for sign-up: an API key, the anon key or a token, each refused in its own
    words when invalid. Unlike InsForge, no credential at all is the anonymous caller (a sign-up from a
    bare `curl` works), not "No token provided"."""
    principal = valid_principal(request)
    if principal is None:
        raise refused_as_verify_user(request.scope)
    return actor_of(request, principal)


def optional_token_actor(request: Request) -> Actor:
    """An optional credential on a public route (the device code lookup, where InsForge reads a bearer if one
    is sent): none is the anonymous caller, a valid one is its caller, and one that fails verification is
    refused as `verifyToken` refuses it rather than silently read as none."""
    principal = valid_principal(request)
    if principal is not None:
        return actor_of(request, principal)
    if key_presented(request.scope):
        raise invalid_api_key()
    raise invalid_token(request.scope, _SIGN_IN)


def person_actor(request: Request) -> Actor:
    """`token_actor`, except that a valid key (the API key, an agent key) comes through as its caller, for
    the service to refuse in its own words: what only a person may do (approving a device) tells a key
    so, instead of calling it an invalid token."""
    if key_presented(request.scope):
        principal = valid_principal(request)
        if principal is None:
            raise invalid_api_key()
        return actor_of(request, principal)
    return token_actor(request)
