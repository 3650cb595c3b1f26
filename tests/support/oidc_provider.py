"""An OpenID provider for tests, on loopback: discovery, authorize (auto-approves `next_user`), token (with
PKCE and client authentication), JWKS, userinfo, plus GitHub- and Discord-shaped profile endpoints, so
built-in providers can be pointed at it. Knobs let a test make it misbehave (wrong key, wrong nonce)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.servers import free_port


@dataclass
class ProviderUser:
    sub: str
    email: str
    email_verified: bool = True
    name: str = "Test Person"


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: ProviderUser


@dataclass
class OidcProvider:
    client_id: str = "kilnbase-test-client"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    next_user: ProviderUser = field(default_factory=lambda: ProviderUser("sub-1", "someone@example.com"))
    sign_with_wrong_key: bool = False
    wrong_nonce: bool = False
    #: The JWKS endpoint answers 503 (a provider that is down).
    jwks_down: bool = False
    jwks_requests: int = 0
    #: Further entries the JWKS lists before the real key (a test's malformed ones).
    jwks_extra: list[Any] = field(default_factory=list)
    #: The JWKS lists the real key without its `kid` (as some providers publish a single key).
    jwks_without_kid: bool = False
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(4)
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, ProviderUser] = {}
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks),
                Route("/userinfo", self._userinfo),
                Route("/github/user", self._github_user),
                Route("/github/user/emails", self._github_emails),
                Route("/discord/users/@me", self._discord_user),
            ]
        )

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoints_for(self, provider: str) -> dict[str, str]:
        """Overrides that point a built-in provider's endpoints at this server."""
        base = {"authorize_url": f"{self.issuer}/authorize", "token_url": f"{self.issuer}/token"}
        if provider == "github":
            return {
                **base,
                "userinfo_url": f"{self.issuer}/github/user",
                "emails_url": f"{self.issuer}/github/user/emails",
            }
        if provider == "discord":
            return {**base, "userinfo_url": f"{self.issuer}/discord/users/@me"}
        return {
            **base,
            "userinfo_url": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "issuer": self.issuer,
        }

    # --- endpoints -----------------------------------------------------------------------------------------

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if (
            q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("redirect_uri")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(
            self.client_id, q["redirect_uri"], q["code_challenge"], q.get("nonce"), self.next_user
        )
        return RedirectResponse(
            f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        )

    def _client_authenticated(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and secrets.compare_digest(secret, self.client_secret)

    async def _token(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        if not self._client_authenticated(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self._grants.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "redirect_uri"}, status_code=400
            )
        verifier = form.get("code_verifier", "")
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if computed != grant.challenge:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
        access = secrets.token_urlsafe(24)
        self._access[access] = grant.user
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": grant.user.sub,
            "iat": now,
            "exp": now + 300,
            "email": grant.user.email,
            "email_verified": grant.user.email_verified,
            "name": grant.user.name,
        }
        if grant.nonce is not None:
            claims["nonce"] = "not-the-nonce" if self.wrong_nonce else grant.nonce
        key = self._other_key if self.sign_with_wrong_key else self._key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._kid})
        return JSONResponse(
            {"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        )

    def mint_id_token(
        self, user: ProviderUser, *, aud: str | None = None, nonce: str | None = None, lifetime: int = 300
    ) -> str:
        """An ID token as a native SDK (Google One Tap, Sign in with Apple) would hand to the app."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": aud or self.client_id,
            "sub": user.sub,
            "iat": now,
            "exp": now + lifetime,
            "email": user.email,
            "email_verified": user.email_verified,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        key = self._other_key if self.sign_with_wrong_key else self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._kid})

    def sign(
        self,
        claims: dict[str, Any],
        *,
        algorithm: str = "RS256",
        kid: str | None = "",
        other_key: bool = False,
    ) -> str:
        """Any token, as an external identity provider (Clerk, Auth0) would issue an access token: `claims`
        as given, signed by the published key (`other_key`: by one it never published), with its `kid`
        (`kid=None`: no kid; any other text: that kid). HS* tokens are signed with a fixed text (any would
        do: Kilnbase must accept none)."""
        headers = {} if kid is None else {"kid": kid or self._kid}
        if algorithm.startswith("HS"):
            return jwt.encode(claims, "not-a-secret-" * 6, algorithm=algorithm, headers=headers)
        return jwt.encode(
            claims, self._other_key if other_key else self._key, algorithm=algorithm, headers=headers
        )

    def provider_body(self, tag: str) -> dict[str, str]:
        """A `POST /api/auth/jwt-providers` body for a provider of its own: this server's keys behind an
        issuer and a JWKS URL that `tag` makes unique (its tokens: `claims(..., iss=body["issuer"])`)."""
        return {
            "name": f"IdP {tag}",
            "provider_key": f"idp-{tag}",
            "issuer": f"{self.issuer}/{tag}",
            "jwks_url": f"{self.issuer}/jwks?for={tag}",
        }

    def claims(self, sub: str, email: str, *, lifetime: int = 300, **extra: Any) -> dict[str, Any]:
        """An access token's usual claims from this issuer."""
        now = int(time.time())
        return {"iss": self.issuer, "sub": sub, "email": email, "iat": now, "exp": now + lifetime, **extra}

    async def _jwks(self, _request: Request) -> Response:
        self.jwks_requests += 1
        if self.jwks_down:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(
            {"use": "sig", "alg": "RS256"}
            if self.jwks_without_kid
            else {"kid": self._kid, "use": "sig", "alg": "RS256"}
        )
        return JSONResponse({"keys": [*self.jwks_extra, jwk]})

    def _user(self, request: Request) -> ProviderUser | None:
        header = request.headers.get("authorization", "")
        return self._access.get(header.removeprefix("Bearer ").strip())

    async def _userinfo(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(
            {"sub": user.sub, "email": user.email, "email_verified": user.email_verified, "name": user.name}
        )

    async def _github_user(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        numeric = int(hashlib.sha256(user.sub.encode()).hexdigest()[:8], 16)
        return JSONResponse({"id": numeric, "login": user.name.replace(" ", "").lower(), "name": user.name})

    async def _github_emails(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse([{"email": user.email, "primary": True, "verified": user.email_verified}])

    async def _discord_user(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return JSONResponse({"message": "401: Unauthorized"}, status_code=401)
        return JSONResponse(
            {"id": user.sub, "username": user.name, "email": user.email, "verified": user.email_verified}
        )

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the test OpenID provider did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
