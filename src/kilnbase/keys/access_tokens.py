"""Signing and verifying the project's JWTs.

Access tokens are RS256 with the project's key id (published at `/.well-known/jwks.json`); HS256 with
`JWT_SECRET` is accepted too, as InsForge falls back to it. The algorithm is chosen by the key that matches
the token's header, never by the token alone: `none`, and HS256 signed with the public key, are refused.
Verified tokens are cached until they expire, because verifying RS256 costs more than the rest of a request.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kilnbase.keys.project_keys import ProjectKeys

ACCESS_TOKEN_SECONDS = 15 * 60
_CACHE_LIMIT = 10_000


class InvalidToken(Exception):
    """The token is malformed, tampered with, expired, or signed by a key we do not know."""


class TokenService:
    def __init__(self, keys: ProjectKeys) -> None:
        self._keys = keys
        # Parsed once: PyJWT given PEM text parses and validates the RSA key on every call (about 40 ms).
        signing_key = serialization.load_pem_private_key(keys.signing_key_pem.encode(), password=None)
        assert isinstance(signing_key, rsa.RSAPrivateKey)
        self._signing_key = signing_key
        self._public_key = serialization.load_pem_public_key(keys.public_key_pem.encode())
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}

    def sign(self, claims: dict[str, Any], *, expires_in: int | None = ACCESS_TOKEN_SECONDS) -> str:
        """An RS256 token with `iat` (and `exp` unless `expires_in` is None) added to `claims`."""
        now = int(time.time())
        payload = {"iat": now, **claims}
        if expires_in is not None:
            payload["exp"] = now + expires_in
        return jwt.encode(payload, self._signing_key, algorithm="RS256", headers={"kid": self._keys.key_id})

    def sign_hs256(self, claims: dict[str, Any], *, expires_in: int = ACCESS_TOKEN_SECONDS) -> str:
        now = int(time.time())
        return jwt.encode(
            {"iat": now, "exp": now + expires_in, **claims}, self._keys.jwt_secret, algorithm="HS256"
        )

    def verify(self, token: str) -> dict[str, Any]:
        cached = self._cache.get(token)
        if cached is not None:
            claims, expires_at = cached
            if time.time() < expires_at:
                return claims
            del self._cache[token]
        claims = self._decode(token)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[token] = (claims, float(claims["exp"]))
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        algorithm = header.get("alg")
        key: Any
        if algorithm == "RS256":
            if header.get("kid") not in (None, self._keys.key_id):
                raise InvalidToken("unknown signing key")
            key = self._public_key
        elif algorithm == "HS256":
            key = self._keys.jwt_secret
        else:
            raise InvalidToken(f"unsupported algorithm {algorithm!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        return claims
