"""Signing and verifying the project's JWTs.

Access tokens are ES256 with the project's EC key id; RS256 tokens with the RSA key id (what signed them
before the switch) and HS256 with `JWT_SECRET` (InsForge falls back to it) are accepted too. Both public keys
are published at `/.well-known/jwks.json`. The algorithm is chosen by the key that matches the token's
header, never by the token alone: `none`, HS256 signed with a public key, and a known key id under another
algorithm are refused. Verified tokens are cached until they expire, because verifying a signature costs more
than the rest of a request.

Signing is `compact_jws`'s rather than PyJWT's `encode`, which spends more time on its generic checks than
the ES256 signature itself takes; the output is the same compact JWS (PyJWT verifies it in the tests).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kilnbase.keys.compact_jws import header_for, sign_es256
from kilnbase.keys.project_keys import ProjectKeys

ACCESS_TOKEN_SECONDS = 15 * 60
_CACHE_LIMIT = 10_000


class InvalidToken(Exception):
    """The token is malformed, tampered with, expired, or signed by a key we do not know."""


class ForeignToken(InvalidToken):
    """The token is not signed by any of the project's keys: an algorithm or key id that is not ours, or an
    RS256 or ES256 token naming no key whose signature our key does not verify. Only such a token may be
    another issuer's (an external JWT provider's, `identity.external_tokens`); one that names our key and
    fails is ours and tampered with, or expired, and nobody else's."""


class TokenService:
    def __init__(self, keys: ProjectKeys) -> None:
        self._keys = keys
        # Parsed once: PyJWT given PEM text parses and validates the key on every call.
        ec_key = serialization.load_pem_private_key(keys.ec_signing_key_pem.encode(), password=None)
        assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
        self._ec_key = ec_key
        self._verify_keys: dict[tuple[str, str | None], Any] = {
            ("ES256", keys.ec_key_id): ec_key.public_key(),
            ("RS256", keys.key_id): serialization.load_pem_public_key(keys.public_key_pem.encode()),
        }
        # Tokens issued before key ids were published carried none; they can only have been RS256.
        self._verify_keys[("RS256", None)] = self._verify_keys[("RS256", keys.key_id)]
        self._header = header_for("ES256", keys.ec_key_id)
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}

    def sign(self, claims: dict[str, Any], *, expires_in: int | None = ACCESS_TOKEN_SECONDS) -> str:
        """An ES256 token with `iat` (and `exp` unless `expires_in` is None) added to `claims`."""
        now = int(time.time())
        payload = {"iat": now, **claims}
        if expires_in is not None:
            payload["exp"] = now + expires_in
        return sign_es256(self._header, payload, self._ec_key)

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
        if algorithm == "HS256":
            key = self._keys.jwt_secret
        elif algorithm in ("ES256", "RS256"):
            key = self._verify_keys.get((algorithm, header.get("kid")))
            if key is None:
                raise ForeignToken("unknown signing key")
        else:
            raise ForeignToken(f"unsupported algorithm {algorithm!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.InvalidSignatureError as exc:
            if header.get("kid") is None and algorithm != "HS256":
                # (Our key was only a guess for a token naming none: it may be an external provider's.)
                raise ForeignToken("invalid token") from exc
            raise InvalidToken("invalid token") from exc
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        return claims
