"""The OAuth sign-in flow InsForge's SDK speaks, for built-in providers and custom OpenID Connect providers.

1. `start`: the app sends its `redirect_uri` (allow-listed) and a PKCE `code_challenge`; we record a flow
   under a random `state` (single use, stored hashed) with our own PKCE verifier towards the provider, and
   return the provider's authorization URL.
2. `callback`: the provider returns `code` and `state`; we redeem the state, exchange the code (with our
   verifier), read the identity (userinfo, and the ID token validated against the provider's JWKS when there
   is one), find or create the user, and send the browser back with a one-time `insforge_code`.
3. `exchange`: the app trades `insforge_code` plus its `code_verifier` for a session. A wrong verifier burns
   the code.

The app may add provider parameters to the start (the SDK's `additionalParams`): those of the allow-list
below are passed on; the flow's own are set by us and ignored; `code_verifier` (the app's secret, which must
never travel in a URL) and anything unknown are refused, so a crafted sign-in link cannot reshape the request
to the provider (OpenID's `request`, `request_uri` or `claims` would replace it wholesale).

Linking: an identity already linked signs in that user. Otherwise a *verified* provider address that matches
an account links to it; if that account never verified its address, its password, identities and sessions
end (`accounts.claim_address`: whoever registered it could not prove the address, the provider just did). An
unverified provider address that matches an account is refused rather than linked.

HTTP here goes through `httpx`, not the `httpx2` the gateway uses: Authlib's OAuth client is built on httpx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
import jwt
import orjson
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from psycopg.rows import DictRow
from pydantic import AfterValidator, Field

from kilnbase.auth import auth_config, oauth_configs, users
from kilnbase.auth.accounts import Accounts, SessionResult, check_redirect, claim_address, with_query
from kilnbase.auth.oauth_providers import (
    BUILT_IN,
    KNOWN_PROVIDERS,
    UNSUPPORTED_PROVIDERS,
    Endpoints,
    Identity,
    parse_oidc_claims,
    spec_for,
)
from kilnbase.auth.parts import ID_SIGN_IN_REFUSAL, AuthParts
from kilnbase.auth.validation import StrictBody
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

_HTTP_TIMEOUT = 15.0
_CACHE_SECONDS = 300.0
#: Set by the flow itself: ignored when the app sends them.
_FLOW_PARAMS = frozenset(
    {
        "redirect_uri",
        "code_challenge",
        "code_challenge_method",
        "client_id",
        "client_type",
        "state",
        "response_type",
        "nonce",
        "scope",
    }
)
#: Provider parameters an app may choose (OpenID Connect's, Google's, Microsoft's, GitHub's).
PASSED_PARAMS = frozenset(
    {
        "prompt",
        "login_hint",
        "max_age",
        "ui_locales",
        "display",
        "acr_values",
        "access_type",
        "include_granted_scopes",
        "hd",
        "domain_hint",
        "allow_signup",
    }
)


class OAuthFailure(Exception):
    """The provider round trip failed after the state was redeemed: reported to the app by redirect."""


def pkce_problems(value: str, label: str) -> list[str]:
    """What is wrong with a PKCE challenge or verifier, in InsForge's words (every check that fails)."""
    problems = []
    if len(value) < 43:
        problems.append(f"{label} must be at least 43 characters")
    if len(value) > 128:
        problems.append(f"{label} must be at most 128 characters")
    if not re.fullmatch(r"[A-Za-z0-9._~-]*", value):
        problems.append(f"{label} must be base64url encoded")
    return problems


def _verifier(value: str) -> str:
    problems = pkce_problems(value, "Code verifier")
    if problems:
        raise ValueError(", code_verifier: ".join(problems))
    return value


class CodeExchange(StrictBody):
    code: str = Field(min_length=1, max_length=512)
    code_verifier: Annotated[str, AfterValidator(_verifier)]


class IdTokenSignIn(StrictBody):
    provider: str = Field(pattern=r"^(google|apple)$")
    token: str = Field(min_length=1, max_length=16384)
    nonce: str | None = Field(None, max_length=512)
    name: str | None = Field(None, max_length=100)


@dataclass(frozen=True)
class ResolvedProvider:
    key: str
    stored_name: str
    client_id: str
    client_secret: str
    endpoints: Endpoints
    scopes: tuple[str, ...]
    parse: Any
    client_auth_method: str
    extra_params: tuple[tuple[str, str], ...]
    callback_url: str
    is_oidc: bool


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


_documents: dict[str, tuple[dict[str, Any], float]] = {}


async def _fetch_json(url: str) -> dict[str, Any]:
    cached = _documents.get(url)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not return a JSON object")
    _documents[url] = (document, time.monotonic() + _CACHE_SECONDS)
    return document


async def discover(discovery_url: str) -> Endpoints:
    try:
        document = await _fetch_json(discovery_url)
        return Endpoints(
            authorize_url=document["authorization_endpoint"],
            token_url=document["token_endpoint"],
            userinfo_url=document.get("userinfo_endpoint"),
            jwks_uri=document["jwks_uri"],
            issuer=document["issuer"],
        )
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise ApiError(
            400,
            "AUTH_OAUTH_CONFIG_ERROR",
            "The provider's OpenID discovery document could not be read.",
            "Check the discoveryEndpoint of the custom provider.",
        ) from exc


def _apple_client_secret(client_id: str, stored: str) -> str:
    """Apple's client secret is a short-lived ES256 JWT made from `{teamId, keyId, privateKey}`."""
    try:
        parts = json.loads(stored)
    except ValueError:
        return stored
    if not isinstance(parts, dict) or not {"teamId", "keyId", "privateKey"} <= set(parts):
        return stored
    now = int(time.time())
    claims = {
        "iss": parts["teamId"],
        "iat": now,
        "exp": now + 300,
        "aud": "https://appleid.apple.com",
        "sub": client_id,
    }
    return jwt.encode(claims, parts["privateKey"], algorithm="ES256", headers={"kid": parts["keyId"]})


def _client(provider: ResolvedProvider, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        token_endpoint_auth_method=provider.client_auth_method,
        redirect_uri=provider.callback_url,
        code_challenge_method="S256",
        timeout=_HTTP_TIMEOUT,
        **kwargs,
    )


async def validate_id_token(
    endpoints: Endpoints, audiences: list[str], token: str, nonce: str | None
) -> dict[str, Any]:
    """Signature (by a key of the provider's JWKS, asymmetric only), issuer, audience, expiry, nonce."""
    assert endpoints.jwks_uri is not None
    try:
        key_set = jwt.PyJWKSet.from_dict(await _fetch_json(endpoints.jwks_uri))
        header = jwt.get_unverified_header(token)
        key = next((k for k in key_set.keys if k.key_id == header.get("kid")), None)
        if key is None or header.get("alg") in (None, "none") or str(header["alg"]).startswith("HS"):
            raise OAuthFailure("the ID token is not signed by a key of the provider")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[header["alg"]],
            audience=audiences,
            issuer=endpoints.issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            leeway=30,
        )
    except (jwt.PyJWTError, httpx.HTTPError, ValueError) as exc:
        raise OAuthFailure(f"invalid ID token: {exc}") from exc
    if nonce is not None:
        found = str(claims.get("nonce", ""))
        hashed = hashlib.sha256(nonce.encode()).hexdigest()
        if not (hmac.compare_digest(found, nonce) or hmac.compare_digest(found, hashed)):
            raise OAuthFailure("the ID token's nonce does not match this sign-in")
    return claims


async def _identity(provider: ResolvedProvider, flow: DictRow, code: str) -> Identity:
    try:
        async with _client(provider) as client:
            token = await client.fetch_token(
                provider.endpoints.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=flow["provider_code_verifier"],
            )
            claims: dict[str, Any] | None = None
            if provider.is_oidc and token.get("id_token"):
                claims = await validate_id_token(
                    provider.endpoints, [provider.client_id], token["id_token"], flow["nonce"]
                )
            elif provider.is_oidc and provider.endpoints.userinfo_url is None:
                raise OAuthFailure("the provider returned no ID token")
            if provider.endpoints.userinfo_url is None:
                assert claims is not None
                identity: Identity = provider.parse(claims)
                return identity
            response = await client.get(
                provider.endpoints.userinfo_url, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            data = response.json()
            if provider.endpoints.emails_url:
                emails = await client.get(
                    provider.endpoints.emails_url, headers={"Accept": "application/json"}
                )
                emails.raise_for_status()
                data = {**data, "emails": emails.json()}
    except (OAuthError, httpx.HTTPError, ValueError, KeyError) as exc:
        raise OAuthFailure(f"{type(exc).__name__}: {exc}") from exc
    identity = provider.parse(data)
    if claims is not None and str(claims["sub"]) != identity.account_id:
        raise OAuthFailure("the userinfo subject differs from the ID token's")
    return identity


def _placeholder_email(provider: ResolvedProvider, identity: Identity) -> str:
    digest = hashlib.sha256(f"{provider.stored_name}:{identity.account_id}".encode()).hexdigest()[:24]
    return f"{provider.key.replace(':', '-')}-{digest}@users.noreply.invalid"


def _with_apple_name(identity: Identity, user_json: str) -> Identity:
    """Apple sends the name once, as a form field on the first sign-in."""
    try:
        name = json.loads(user_json).get("name", {})
        full = " ".join(p for p in (name.get("firstName"), name.get("lastName")) if isinstance(p, str) and p)
    except (ValueError, AttributeError):
        return identity
    return replace(identity, name=full or identity.name)


def _not_configured(provider: str) -> ApiError:
    return ApiError(
        400,
        "AUTH_OAUTH_CONFIG_ERROR",
        f"{provider} OAuth is not properly configured. Please check your oauth configurations.",
        f"Configure it with POST /api/auth/oauth/configs (provider {provider}, clientId, clientSecret).",
    )


def _passed_params(params: Mapping[str, str]) -> dict[str, str]:
    """The app's extra parameters for the provider, refusing the secret and the unknown (module docstring)."""
    if "code_verifier" in params:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "code_verifier must not be sent when starting a sign-in.",
            "Keep the verifier in the app; send only its code_challenge now, and the verifier to "
            "/api/auth/oauth/exchange.",
        )
    if params.get("code_challenge_method", "S256") != "S256":
        raise ApiError(
            400,
            "INVALID_INPUT",
            "code_challenge_method must be S256.",
            "Send the SHA-256 of the verifier as code_challenge (PKCE S256); plain is not accepted.",
        )
    unknown = sorted(name for name in params if name not in _FLOW_PARAMS and name not in PASSED_PARAMS)
    if unknown:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Unknown sign-in parameter {unknown[0][:64]!r}.",
            f"Provider parameters that may be passed: {', '.join(sorted(PASSED_PARAMS))}.",
        )
    return {name: value for name, value in params.items() if name in PASSED_PARAMS}


class OAuthSignIn:
    def __init__(self, parts: AuthParts, accounts: Accounts) -> None:
        self.parts = parts
        self.accounts = accounts

    async def _limit(self, actor: Actor) -> None:
        await self.parts.limit(f"oauth:{actor.ip}", self.parts.settings.oauth_limit)

    @staticmethod
    def _supported(key: str) -> None:
        if key in UNSUPPORTED_PROVIDERS or key not in BUILT_IN:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"Unsupported OAuth provider: {key}. Supported providers: {', '.join(KNOWN_PROVIDERS)}",
                "Use one of the supported providers, or configure a custom one (POST "
                "/api/auth/oauth/custom/configs).",
            )

    async def _provider(self, key: str, *, custom: bool) -> ResolvedProvider:
        """The provider's configuration with its secret, and its endpoints (discovered for custom ones)."""
        if not custom:
            self._supported(key)
        async with self.parts.database.as_owner() as cur:
            if custom:
                row = await oauth_configs.get_custom(cur, key)
            else:
                row = await oauth_configs.get_built_in(cur, key)
        return await self._custom(key, row) if custom else self._built_in(key, row)

    def _built_in(self, provider: str, row: DictRow | None) -> ResolvedProvider:
        secret = oauth_configs.built_in_secret(row, self.parts.box) if row else None
        if row is None or not row["client_id"] or not secret:
            raise _not_configured(provider)
        spec = spec_for(provider, self.parts.settings.oauth_endpoints)
        if provider == "apple":
            secret = _apple_client_secret(row["client_id"], secret)
        return ResolvedProvider(
            key=provider,
            stored_name=provider,
            client_id=row["client_id"],
            client_secret=secret,
            endpoints=spec.endpoints,
            scopes=tuple(row["scopes"] or spec.scopes),
            parse=spec.parse,
            client_auth_method=spec.client_auth_method,
            extra_params=spec.extra_authorize_params,
            callback_url=row["redirect_uri"] or f"{self.parts.base_url}/api/auth/oauth/{provider}/callback",
            is_oidc=spec.endpoints.jwks_uri is not None,
        )

    async def _custom(self, key: str, row: DictRow | None) -> ResolvedProvider:
        if row is None:
            raise oauth_configs.custom_not_found(key)
        endpoints = await discover(row["discovery_endpoint"])
        return ResolvedProvider(
            key=key,
            stored_name=f"custom:{key}",
            client_id=row["client_id"],
            client_secret=oauth_configs.custom_secret(row, self.parts.box),
            endpoints=endpoints,
            scopes=("openid", "email", "profile"),
            parse=parse_oidc_claims,
            client_auth_method="client_secret_post",
            extra_params=(),
            callback_url=f"{self.parts.base_url}/api/auth/oauth/custom/{key}/callback",
            is_oidc=True,
        )

    # --- 1. start ------------------------------------------------------------------------------------------

    async def start(self, actor: Actor, key: str, params: Mapping[str, str], *, custom: bool) -> str:
        """The provider's authorization URL for a new flow back to the app's `redirect_uri`."""
        await self._limit(actor)
        if not custom:
            self._supported(key)
        redirect_uri = params.get("redirect_uri")
        challenge = params.get("code_challenge")
        # InsForge's query checks, in its words.
        problems = []
        if not redirect_uri:
            problems.append("redirect_uri: Redirect URI is required")
        elif not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s]+$", redirect_uri):
            problems.append("redirect_uri: Invalid url")
        if challenge is None:
            problems.append("code_challenge: Required")
        else:
            problems += [f"code_challenge: {p}" for p in pkce_problems(challenge, "Code challenge")]
        if problems:
            raise ApiError(
                400,
                "INVALID_INPUT",
                ", ".join(problems),
                "Send redirect_uri (an allowed redirect URL) and code_challenge (the base64url SHA-256 of "
                "your PKCE code_verifier).",
            )
        assert redirect_uri is not None
        passed = _passed_params(params)
        provider = await self._provider(key, custom=custom)
        config = await auth_config.read(self.parts.database)
        check_redirect(redirect_uri, config, required=True)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        async with self.parts.database.as_owner() as cur:
            await cur.execute("delete from auth.oauth_flows where expires_at < now()")
            await cur.execute(
                "insert into auth.oauth_flows (state_hash, provider, redirect_uri, code_challenge, "
                "provider_code_verifier, nonce, expires_at) values (%s, %s, %s, %s, %s, %s, "
                "now() + make_interval(secs => %s))",
                (
                    _hash(state),
                    provider.stored_name,
                    redirect_uri,
                    challenge,
                    verifier,
                    nonce,
                    self.parts.settings.oauth_flow_seconds,
                ),
            )
        passed.update(dict(provider.extra_params))
        if provider.is_oidc:
            passed["nonce"] = nonce
        async with _client(provider, scope=" ".join(provider.scopes)) as client:
            url, _state = client.create_authorization_url(
                provider.endpoints.authorize_url, state=state, code_verifier=verifier, **passed
            )
        return str(url)

    # --- 2. callback ---------------------------------------------------------------------------------------

    async def callback(self, actor: Actor, key: str, params: Mapping[str, str], *, custom: bool) -> str:
        """Where to send the browser: the app's redirect_uri with `insforge_code`, or with `error`."""
        await self._limit(actor)
        provider = await self._provider(key, custom=custom)
        state = params.get("state")
        if not state:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "The OAuth callback has no state.",
                "Start the sign-in again from the app; the provider must send the user back with the state "
                "it was given.",
            )
        flow = await self._redeem_state(provider, state)
        redirect_uri: str = flow["redirect_uri"]
        if params.get("error"):
            return with_query(redirect_uri, {"error": params["error"][:200]})
        code = params.get("code")
        if not code:
            return with_query(redirect_uri, {"error": "missing_code"})
        try:
            identity = await _identity(provider, flow, code)
            if provider.key == "apple" and params.get("user"):
                identity = _with_apple_name(identity, params["user"])
            row = await self._link_or_create(provider, identity)
        except OAuthFailure as exc:
            reason = str(exc)
            error = (
                reason.split(":", 1)[0]
                if reason.split(":", 1)[0] in ("email_exists", "signup_disabled")
                else "oauth_failed"
            )
            return with_query(redirect_uri, {"error": error})
        one_time = secrets.token_urlsafe(32)
        async with self.parts.database.as_owner() as cur:
            await cur.execute("delete from auth.oauth_exchange_codes where expires_at < now()")
            await cur.execute(
                "insert into auth.oauth_exchange_codes (code_hash, user_id, code_challenge, expires_at) "
                "values (%s, %s, %s, now() + make_interval(secs => %s))",
                (_hash(one_time), row["id"], flow["code_challenge"], self.parts.settings.oauth_flow_seconds),
            )
        return with_query(redirect_uri, {"insforge_code": one_time})

    async def _redeem_state(self, provider: ResolvedProvider, state: str) -> DictRow:
        async with self.parts.database.as_owner() as cur:
            await cur.execute(
                "delete from auth.oauth_flows where state_hash = %s returning provider, redirect_uri, "
                "code_challenge, provider_code_verifier, nonce, expires_at < now() as expired",
                (_hash(state),),
            )
            row = await cur.fetchone()
        if row is None or row["expired"] or row["provider"] != provider.stored_name:
            raise ApiError(
                400,
                "INVALID_INPUT",
                "Invalid or expired OAuth state.",
                "Start the sign-in again from the app; each attempt can be completed once.",
            )
        return row

    async def _link_or_create(self, provider: ResolvedProvider, identity: Identity) -> DictRow:
        """The user this identity signs in, linking or creating as described in the module docstring."""
        provider_data = orjson.dumps(
            {"email": identity.email, "name": identity.name, "avatar_url": identity.avatar_url}
        ).decode()
        config = await auth_config.read(self.parts.database)
        ended: list[str] = []
        async with self.parts.database.as_owner() as cur:
            await cur.execute(
                "update auth.user_providers set provider_data = %s::jsonb, updated_at = now() "
                "where provider = %s and provider_account_id = %s returning user_id::text",
                (provider_data, provider.stored_name, identity.account_id),
            )
            linked = await cur.fetchone()
            if linked is not None:
                row = await users.by_id(cur, linked["user_id"])
                assert row is not None
                return row
            email = identity.email.lower() if identity.email else None
            existing = await users.by_email(cur, email, lock=True) if email else None
            if existing is not None:
                if not identity.email_verified:
                    raise OAuthFailure("email_exists: an account with this email exists; sign in to it first")
                ended = await claim_address(cur, existing, keep_password=False)
                user_id = str(existing["id"])
            else:
                if config["disable_signup"]:
                    raise OAuthFailure("signup_disabled: sign-up is disabled for this project")
                profile: dict[str, Any] = {}
                if identity.name:
                    profile["name"] = identity.name
                if identity.avatar_url:
                    profile["avatar_url"] = identity.avatar_url
                created = await users.create(
                    cur,
                    email=email or _placeholder_email(provider, identity),
                    password_hash=None,
                    name=None,
                    email_verified=identity.email_verified,
                )
                user_id = str(created["id"])
                if profile:
                    await users.merge_profile(cur, user_id, profile)
            await cur.execute(
                "insert into auth.user_providers (user_id, provider, provider_account_id, provider_data) "
                "values (%s, %s, %s, %s::jsonb)",
                (user_id, provider.stored_name, identity.account_id, provider_data),
            )
            row = await users.by_id(cur, user_id)
            assert row is not None
        self.parts.sessions.ended(ended)
        return row

    # --- 3. exchange ---------------------------------------------------------------------------------------

    async def exchange(self, actor: Actor, body: CodeExchange, client_type: str) -> SessionResult:
        """A session for the one-time `insforge_code`, given the verifier of the flow's challenge."""
        await self._limit(actor)
        async with self.parts.database.as_owner() as cur:
            await cur.execute(
                "delete from auth.oauth_exchange_codes where code_hash = %s "
                "returning user_id::text, code_challenge, expires_at < now() as expired",
                (_hash(body.code),),
            )
            found = await cur.fetchone()
        if found is None or found["expired"]:
            raise ApiError(400, "INVALID_INPUT", "Invalid or expired code", "Start the sign-in again.")
        if not hmac.compare_digest(s256(body.code_verifier), found["code_challenge"]):
            raise ApiError(
                400,
                "AUTH_UNAUTHORIZED",
                "PKCE verification failed",
                "Send the verifier generated with the challenge; the code is now spent, start again.",
            )
        async with self.parts.database.as_owner() as cur:
            row = await users.by_id(cur, found["user_id"])
            if row is None:
                raise ApiError(
                    404,
                    "AUTH_USER_NOT_FOUND",
                    "User not found",
                    "The user was deleted; start the sign-in again.",
                )
            tokens = await self.accounts.issue(cur, actor, row, client_type)
        return SessionResult(users.user_json(row), tokens)

    # --- native sign-in ------------------------------------------------------------------------------------

    async def id_token_sign_in(self, actor: Actor, body: IdTokenSignIn, client_type: str) -> SessionResult:
        """Native sign-in (Google One Tap, Sign in with Apple): the app already holds the provider's ID
        token."""
        await self.parts.limit(
            f"id-token:{actor.ip}",
            self.parts.settings.id_token_limit,
            ID_SIGN_IN_REFUSAL,
        )
        if body.provider == "apple" and not (body.nonce or "").strip():
            problem = "Required" if body.nonce is None else "Nonce is required"
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"nonce: {problem}",
                "Send the nonce you gave Sign in with Apple, the one the ID token was issued for.",
            )
        async with self.parts.database.as_owner() as cur:
            row = await oauth_configs.get_built_in(cur, body.provider)
        if row is None or not row["client_id"]:
            raise _not_configured(body.provider)
        spec = spec_for(body.provider, self.parts.settings.oauth_endpoints)
        audiences = [row["client_id"], *row["native_client_ids"]]
        try:
            claims = await validate_id_token(spec.endpoints, audiences, body.token, body.nonce)
        except OAuthFailure as exc:
            # InsForge's answers: a Google token that does not verify is the request's mistake (400), an
            # Apple one is refused (401).
            if body.provider == "apple":
                raise ApiError(401, "AUTH_UNAUTHORIZED", "Failed to verify Apple ID token", str(exc)) from exc
            raise ApiError(400, "INVALID_INPUT", "Failed to verify Google ID token", str(exc)) from exc
        identity = parse_oidc_claims(claims)
        if body.name and not identity.name:
            identity = replace(identity, name=body.name)
        resolved = ResolvedProvider(
            key=body.provider,
            stored_name=body.provider,
            client_id=row["client_id"],
            client_secret="",
            endpoints=spec.endpoints,
            scopes=spec.scopes,
            parse=spec.parse,
            client_auth_method=spec.client_auth_method,
            extra_params=(),
            callback_url="",
            is_oidc=True,
        )
        try:
            user = await self._link_or_create(resolved, identity)
        except OAuthFailure as exc:
            code = str(exc).split(":", 1)[0]
            if code == "email_exists":
                raise ApiError(
                    409,
                    "AUTH_EMAIL_EXISTS",
                    "An account with this email exists; sign in to it first.",
                    "Sign in to that account with the method it already uses.",
                ) from None
            raise ApiError(
                403,
                "FORBIDDEN",
                "Sign-up is disabled for this project.",
                "Ask an admin to create the user (POST /api/auth/users), then sign in.",
            ) from None
        async with self.parts.database.as_owner() as cur:
            tokens = await self.accounts.issue(cur, actor, user, client_type)
        return SessionResult(users.user_json(user), tokens)
