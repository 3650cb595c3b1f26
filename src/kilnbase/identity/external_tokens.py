"""Access tokens another identity provider issued (Clerk, Auth0, Firebase, WorkOS, a company's own OIDC), as
this process knows the providers the admin configured (`auth.jwt_providers`, `/api/auth/jwt-providers`).

InsForge's contract (`services/auth/external-jwt.service.ts`, `api/middlewares/auth.ts`): a bearer token
that is not one of the project's own is matched by its `iss` to an enabled provider, verified against that
provider's JWKS (asymmetric algorithms only: RS, ES and PS at 256, 384 and 512 bits; never HS*, never
`none`), its issuer, audience (when the provider names one) and expiry checked, and its claims mapped by the
provider's `claim_mappings` (dot paths into the token) to the user: `sub` and `email` are required, `sub` a
UUID when the provider's `subject_type` says so. The caller then acts as the provider's `default_role`.

The credential resolver asks here only after the project's own verification refused the token as not
signed by a project key (`keys.access_tokens.ForeignToken`), so a token Kilnbase issued never pays for this.
An external token, once verified, is cached until its `exp` (as the project's own are), and the cache is
dropped whenever the providers change.

Verification is synchronous, as the resolver is on every request's path: it uses only the keys this process
holds. When a provider's keys are not held yet, have aged past `JWKS_TTL_SECONDS`, or do not include the
token's `kid` (the provider rotated its keys), `KeysNeeded` says which URL to fetch; the request edge awaits
`fetch` and resolves again. A fetch is bounded in time and size, follows no redirect, takes no proxy from
the environment (`http/outbound.py`'s conventions, which this layer cannot import), and is made at most once
per `REFETCH_COOLDOWN_SECONDS` per URL, so tokens with made-up key ids cannot make Kilnbase hammer a
provider, and a provider that is down costs each request nothing but its 401. A token without a `kid` is
tried against the provider's keys that fit its algorithm (at most `KIDLESS_CANDIDATES`), as jose and other
common verifiers do; `exp`, `nbf` and `iat` are checked with a small leeway for clock skew
(`KILNBASE_AUTH_JWT_PROVIDER_LEEWAY_SECONDS`). A JWKS URL may carry a credential (userinfo, a token in its
query): it is logged only as `redacted_url` shows it.

The providers are loaded on start and reloaded on `NOTIFY kilnbase_jwt_providers` (a trigger on the table,
migration 0260), so a provider switched off or deleted stops working in every process within moments
(`pg_listen.ListenedView`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import orjson
from psycopg import AsyncConnection

from kilnbase.pg_listen import ListenedView

log = logging.getLogger("kilnbase.external_tokens")

CHANNEL = "kilnbase_jwt_providers"
#: InsForge's list: asymmetric signatures only. A symmetric one (HS*) would need a shared secret, and a
#: token signed with a provider's public key as an HMAC secret is the classic forgery; `none` is no signature.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
#: A provider's keys are fetched again after this long (InsForge's `cacheMaxAge`, 10 minutes).
JWKS_TTL_SECONDS = 600.0
#: At most one fetch per URL in this long: for an unknown `kid` and after a failed fetch alike.
REFETCH_COOLDOWN_SECONDS = 30.0
JWKS_TIMEOUT_SECONDS = 5.0
JWKS_CONNECT_SECONDS = 3.0
#: A JWKS is a few keys of a few hundred bytes; anything larger is not one.
JWKS_MAX_BYTES = 256 * 1024
JWKS_MAX_KEYS = 100
#: The most keys a token without a `kid` is tried against (each a signature check).
KIDLESS_CANDIDATES = 8
#: The clock skew allowed on `exp`, `nbf` and `iat` unless the settings say otherwise.
DEFAULT_LEEWAY_SECONDS = 30.0
#: The key type (and curve) each algorithm's keys have.
_KEY_SHAPES = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
#: The latest `exp` a verified token is cached until (year 9999): a larger one is kept until then.
MAX_EXPIRY = 253402300799
#: Verified external tokens kept (cleared whole when full, as `TokenService` does).
CACHE_LIMIT = 10_000
#: Claims the request's identity keeps for itself: a mapping may not name them (`auth/jwt_providers.py`).
RESERVED_CLAIMS = frozenset(
    {"role", "iss", "aud", "exp", "iat", "nbf", "provider", "sid", "agent_key", "agent_session"}
)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

_LOAD = (
    "select provider_key, issuer, audience, jwks_url, claim_mappings, default_role, subject_type "
    "from auth.jwt_providers where is_enabled order by created_at, provider_key"
)


class NotExternal(Exception):
    """The token names no issuer an enabled provider has: it is nobody's here (the caller's own error
    stands)."""


class ExternalRefused(Exception):
    """The token names an enabled provider's issuer and fails its checks."""


class KeysNeeded(Exception):
    """The provider's keys must be fetched (`ExternalTokens.fetch`) before the token can be checked."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass(frozen=True)
class JwtProvider:
    """An enabled provider, as verification needs it."""

    provider_key: str
    issuer: str
    audience: str | None
    jwks_url: str
    claim_mappings: Mapping[str, str]
    default_role: str
    subject_type: str


@dataclass(frozen=True)
class ExternalIdentity:
    """Who an external token stands for: the role to act as and the claims the database reads
    (`request.jwt.claims`: `auth.uid()`, `auth.uid_text()`, `auth.jwt()`)."""

    role: str
    user_id: str
    email: str
    claims: Mapping[str, Any]
    expires_at: float


@dataclass(frozen=True)
class _Key:
    """One signing key of a provider's JWKS: its id (if any), the public key, the algorithm it declares (if
    any), and its type and curve."""

    kid: str | None
    key: Any
    algorithm: str | None
    shape: tuple[str, str | None]

    def fits(self, algorithm: str) -> bool:
        return self.algorithm in (None, algorithm) and self.shape == _KEY_SHAPES[algorithm]


@dataclass
class _KeySet:
    """A provider's keys, as last fetched, and when."""

    keys: tuple[_Key, ...] = ()
    #: When the keys were last fetched (monotonic); None: never successfully.
    fetched_at: float | None = None
    #: When a fetch was last tried, successful or not (monotonic).
    tried_at: float = float("-inf")

    def fresh(self, now: float) -> bool:
        return self.fetched_at is not None and now - self.fetched_at < JWKS_TTL_SECONDS

    def may_fetch(self, now: float) -> bool:
        return now - self.tried_at >= REFETCH_COOLDOWN_SECONDS

    def keys_for(self, kid: Any, algorithm: str) -> list[Any]:
        """The public keys the token may be signed with: the one its `kid` names, or for a token without a
        `kid`, those of the algorithm's type (at most `KIDLESS_CANDIDATES`); none when the key declares
        another algorithm or is of another type."""
        if isinstance(kid, str):
            return [k.key for k in self.keys if k.kid == kid and k.fits(algorithm)][:1]
        if kid is None:
            return [k.key for k in self.keys if k.fits(algorithm)][:KIDLESS_CANDIDATES]
        return []


def _segment(text: str) -> dict[str, Any]:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = orjson.loads(data)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise NotExternal("malformed token") from None
    if not isinstance(value, dict):
        raise NotExternal("malformed token")
    return value


def _claim(payload: Mapping[str, Any], path: str) -> Any:
    """A claim by dot path (`user_metadata.email`), as InsForge reads one; None when absent."""
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _text(value: Any) -> str | None:
    """A claim as text, as InsForge's `String(value)` makes one of a scalar; None for absent, null and
    structured values (an object's text is `[object Object]` there: no usable id or email)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text or None


def _parse_keys(document: Any) -> tuple[_Key, ...]:
    """The signing keys of a JWKS document: asymmetric ones only (an `oct` key is a shared secret, and
    never verifies anything here), not those marked for encryption; unreadable keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no keys array)")
    keys: list[_Key] = []
    for data in document["keys"][:JWKS_MAX_KEYS]:
        if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC") or data.get("use") == "enc":
            continue
        algorithm = data.get("alg")
        if algorithm is not None and (not isinstance(algorithm, str) or algorithm not in ALGORITHMS):
            continue
        curve = data.get("crv") if data["kty"] == "EC" else None
        if curve is not None and not isinstance(curve, str):
            continue
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        kid = data.get("kid")
        keys.append(_Key(kid if isinstance(kid, str) else None, key.key, algorithm, (data["kty"], curve)))
    if not keys:
        raise ValueError("the JWKS holds no usable signing key")
    return tuple(keys)


def redacted_url(url: str) -> str:
    """`url` as it may be logged or shown: its userinfo and the values of its query replaced by `***` (a JWKS
    URL may carry a credential: `https://user:pass@idp/jwks`, `.../jwks?token=...`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a URL that cannot be read)"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    # (A field without `=` is a bare value: `?<token>`.)
    fields = [field.partition("=") for field in parts.query.split("&") if field]
    query = "&".join(f"{name}=***" if equals else "***" for name, equals, _ in fields)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class ExternalTokens(ListenedView):
    channel = CHANNEL
    application_name = "kilnbase-jwt-providers"

    def __init__(self, conninfo: str, leeway_seconds: float = DEFAULT_LEEWAY_SECONDS) -> None:
        super().__init__(conninfo)
        self._leeway = leeway_seconds
        self._by_issuer: dict[str, tuple[JwtProvider, ...]] = {}
        self._key_sets: dict[str, _KeySet] = {}
        self._fetching: dict[str, asyncio.Lock] = {}
        self._verified: dict[str, ExternalIdentity] = {}

    @property
    def any_enabled(self) -> bool:
        return bool(self._by_issuer)

    # --- verification (sync: on the request's path) --------------------------------------------------------

    def verify(self, token: str) -> ExternalIdentity:
        """The identity an enabled provider's token stands for. Raises `NotExternal` (no provider's issuer),
        `ExternalRefused` (why it fails), or `KeysNeeded` (fetch, then call again)."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached.expires_at:
                return cached
            del self._verified[token]
        if not self._by_issuer:
            raise NotExternal("no external JWT provider is enabled")
        header_text, _, rest = token.partition(".")
        payload_text, _, signature = rest.partition(".")
        if not signature or "." in signature:
            raise NotExternal("malformed token")
        issuer = _segment(payload_text).get("iss")
        providers = self._by_issuer.get(issuer) if isinstance(issuer, str) else None
        if not providers:
            raise NotExternal("the token's issuer is not a configured JWT provider")
        algorithm = _segment(header_text).get("alg")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:  # (a list is not hashable)
            raise ExternalRefused(
                f"algorithm {algorithm!r} is not accepted from JWT providers (RS*, ES* and PS* only)"
            )
        kid = _segment(header_text).get("kid")
        refusal = ExternalRefused("the token is not signed by a key of its provider")
        for provider in providers:
            try:
                identity = self._verify_with(token, provider, algorithm, kid)
            except ExternalRefused as exc:
                refusal = exc
                continue
            if len(self._verified) >= CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = identity
            return identity
        raise refusal

    def _verify_with(self, token: str, provider: JwtProvider, algorithm: str, kid: Any) -> ExternalIdentity:
        now = time.monotonic()
        key_set = self._key_sets.get(provider.jwks_url)
        if key_set is None or not key_set.fresh(now):
            if key_set is None or key_set.may_fetch(now):
                raise KeysNeeded(provider.jwks_url)
            name = provider.provider_key
            raise ExternalRefused(f"the signing keys of JWT provider {name!r} could not be fetched")
        keys = key_set.keys_for(kid, algorithm)
        if not keys:
            if key_set.may_fetch(now):  # (the provider may have rotated its keys since the last fetch)
                raise KeysNeeded(provider.jwks_url)
            raise ExternalRefused(f"unknown signing key for JWT provider {provider.provider_key!r}")
        payload = self._decoded(token, provider, algorithm, keys)
        return self._identity(provider, payload)

    def _decoded(self, token: str, provider: JwtProvider, algorithm: str, keys: list[Any]) -> dict[str, Any]:
        """The token's claims, checked against the first of `keys` its signature verifies with (the one its
        `kid` names, or each that fits a token without one)."""
        for key in keys:
            try:
                payload: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    issuer=provider.issuer,
                    audience=provider.audience,
                    leeway=self._leeway,
                    options={"require": ["exp", "iss"], "verify_aud": provider.audience is not None},
                )
            except jwt.InvalidSignatureError:
                continue  # (a token without a kid: the next key that fits)
            except jwt.ExpiredSignatureError:
                raise ExternalRefused("token expired") from None
            except jwt.InvalidAudienceError:
                raise ExternalRefused(
                    "the token's audience is not the one its JWT provider expects"
                ) from None
            except jwt.PyJWTError as exc:
                raise ExternalRefused(f"invalid token: {exc}") from None
            return payload
        raise ExternalRefused("invalid token: Signature verification failed")

    @staticmethod
    def _identity(provider: JwtProvider, payload: Mapping[str, Any]) -> ExternalIdentity:
        """The claims the database reads, mapped as the provider says: `sub`, `email`, the role, where they
        came from, and each further mapping's value (as the token has it: text, number, list or object)."""
        subject = _text(_claim(payload, provider.claim_mappings.get("sub", "sub")))
        email = _text(_claim(payload, provider.claim_mappings.get("email", "email")))
        if subject is None:
            raise ExternalRefused("the token has no subject (the claim mapped to sub)")
        if email is None:
            raise ExternalRefused("the token has no email (the claim mapped to email)")
        if provider.subject_type == "uuid" and not UUID.match(subject):
            raise ExternalRefused(
                f"the token's subject is not a UUID, and JWT provider {provider.provider_key!r} expects one"
            )
        claims: dict[str, Any] = {
            "sub": subject,
            "email": email,
            "role": provider.default_role,
            "iss": provider.issuer,
            "exp": payload["exp"],
            "provider": provider.provider_key,
        }
        for name, path in provider.claim_mappings.items():
            if name not in claims and name not in RESERVED_CLAIMS:
                value = _claim(payload, path)
                if value is not None:
                    claims[name] = value
        # (PyJWT read `exp` as an integer; one past any float is kept no longer than the longest cache.)
        expires_at = float(min(int(payload["exp"]), MAX_EXPIRY))
        return ExternalIdentity(provider.default_role, subject, email, claims, expires_at)

    def still_accepts(self, claims: Mapping[str, Any], role: str) -> bool:
        """Whether an identity this view verified (its request claims, its role) still stands: its provider
        is enabled, with the same issuer and default role. What outlives a request (a realtime socket) asks
        this, since a provider switched off, deleted or given another role must end its callers' access
        as it ends a new request's."""
        issuer, key = claims.get("iss"), claims.get("provider")
        found = self._by_issuer.get(issuer, ()) if isinstance(issuer, str) else ()
        return any(p.provider_key == key and p.default_role == role for p in found)

    # --- keys (async: fetched off the request's path when it must wait) ------------------------------------

    async def fetch(self, url: str) -> None:
        """Fetch a provider's keys, once for every request waiting on them; a failure is logged and
        leaves the URL in its cooldown (the waiting requests are refused)."""
        lock = self._fetching.setdefault(url, asyncio.Lock())
        asked_at = time.monotonic()
        async with lock:
            key_set = self._key_sets.setdefault(url, _KeySet())
            if key_set.tried_at >= asked_at or not key_set.may_fetch(time.monotonic()):
                return  # fetched (or tried) while this request waited
            key_set.tried_at = time.monotonic()
            try:
                keys = _parse_keys(await _get_json(url))
            except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, ValueError) as exc:
                shown = redacted_url(url)
                log.warning("the JWKS at %s could not be fetched: %s", shown, _described(exc, url, shown))
                return
            key_set.keys = keys
            key_set.fetched_at = time.monotonic()

    # --- the providers (ListenedView) ----------------------------------------------------------------------

    async def load(self, conn: AsyncConnection[Any]) -> None:
        cur = await conn.execute(_LOAD)
        by_issuer: dict[str, list[JwtProvider]] = {}
        for key, issuer, audience, jwks_url, mappings, role, subject_type in await cur.fetchall():
            # (An empty audience checks none, as InsForge's `if (provider.audience)`: a blank field sends it.)
            checked = audience or None
            provider = JwtProvider(key, issuer, checked, jwks_url, dict(mappings), role, subject_type)
            by_issuer.setdefault(issuer, []).append(provider)
        self._by_issuer = {issuer: tuple(found) for issuer, found in by_issuer.items()}
        # A provider switched off, deleted or changed: no token it verified before may pass on a cache.
        self._verified = {}
        urls = {p.jwks_url for found in by_issuer.values() for p in found}
        self._key_sets = {url: keys for url, keys in self._key_sets.items() if url in urls}
        self._fetching = {url: lock for url, lock in self._fetching.items() if url in urls}

    def heard(self, payload: str) -> Awaitable[None]:
        return self.reload()

    async def reload(self) -> None:
        """Read the providers again (on a connection of its own: the listener's is busy listening). Also
        called by this process's own changes, so its next request sees them before the notification."""
        async with await AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
            await self.load(conn)


async def _get_json(url: str) -> Any:
    """GET a JSON document: `JWKS_TIMEOUT_SECONDS` for the whole call, at most `JWKS_MAX_BYTES` read, 200
    only, no redirects, no proxy from the environment."""
    limits = httpx.Timeout(JWKS_TIMEOUT_SECONDS, connect=JWKS_CONNECT_SECONDS)
    async with (
        asyncio.timeout(JWKS_TIMEOUT_SECONDS),
        httpx.AsyncClient(timeout=limits, follow_redirects=False, trust_env=False) as client,
        client.stream("GET", url, headers={"Accept": "application/json"}) as answer,
    ):
        if answer.status_code != 200:
            raise ValueError(f"HTTP {answer.status_code}")
        body = bytearray()
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > JWKS_MAX_BYTES:
                raise ValueError(f"larger than {JWKS_MAX_BYTES} bytes")
    return orjson.loads(body)


def _described(exc: BaseException, url: str, shown: str) -> str:
    """The error's first line, with the URL (and any credential it carries) as `shown`."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = lines[0].replace(url, shown)
    userinfo = url.partition("//")[2].partition("/")[0].rpartition("@")[0]
    query = url.partition("?")[2].partition("#")[0]
    hidden = [userinfo, *(field.partition("=")[2] if "=" in field else field for field in query.split("&"))]
    for secret in sorted(filter(None, hidden), key=len, reverse=True):
        text = text.replace(secret, "***")
    return f"{type(exc).__name__}: {text}"
