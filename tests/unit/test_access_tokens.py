"""Tokens are signed ES256 (verifiable by anyone from the JWKS); RS256 tokens issued before the switch still
verify; verification refuses every forgery we know of."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from kilnbase.config import Settings
from kilnbase.keys.access_tokens import InvalidToken, TokenService
from kilnbase.keys.project_keys import ProjectKeys, load_project_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ProjectKeys:
    return load_project_keys(Settings(data_dir=tmp_path_factory.mktemp("keys")))


@pytest.fixture
def tokens(keys: ProjectKeys) -> TokenService:
    return TokenService(keys)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_es256_round_trip_carries_kid_and_expiry(tokens: TokenService, keys: ProjectKeys) -> None:
    token = tokens.sign({"sub": "u1", "role": "authenticated", "email": "a@b.c"})
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"], header["typ"]) == ("ES256", keys.ec_key_id, "JWT")
    claims = tokens.verify(token)
    assert claims["sub"] == "u1" and claims["exp"] - claims["iat"] == 15 * 60
    # Anyone can check it with the published key alone, as any JWT library does.
    published = next(k for k in keys.jwks()["keys"] if k["kid"] == keys.ec_key_id)
    assert jwt.decode(token, jwt.PyJWK(published).key, algorithms=["ES256"])["email"] == "a@b.c"


def _rs256(keys: ProjectKeys, claims: dict[str, object], **headers: str) -> str:
    """A token as Kilnbase signed them before ES256: RS256 with the project's RSA key."""
    private = serialization.load_pem_private_key(keys.signing_key_pem.encode(), password=None)
    return jwt.encode({"exp": int(time.time()) + 900, **claims}, private, algorithm="RS256", headers=headers)  # type: ignore[arg-type]


def test_rs256_tokens_from_before_the_switch_still_verify(tokens: TokenService, keys: ProjectKeys) -> None:
    assert tokens.verify(_rs256(keys, {"sub": "old"}, kid=keys.key_id))["sub"] == "old"
    assert tokens.verify(_rs256(keys, {"sub": "older"}))["sub"] == "older"  # from before key ids


def test_a_key_id_under_another_algorithm_is_refused(tokens: TokenService, keys: ProjectKeys) -> None:
    with pytest.raises(InvalidToken, match="unknown signing key"):
        tokens.verify(_rs256(keys, {"sub": "x"}, kid=keys.ec_key_id))
    es256 = tokens.sign({"sub": "x"})
    _header, payload, signature = es256.split(".")
    relabelled = _b64({**jwt.get_unverified_header(es256), "kid": keys.key_id})
    with pytest.raises(InvalidToken):
        tokens.verify(f"{relabelled}.{payload}.{signature}")


def test_hs256_with_the_jwt_secret_is_accepted(tokens: TokenService) -> None:
    assert tokens.verify(tokens.sign_hs256({"sub": "u2", "role": "authenticated"}))["sub"] == "u2"


def test_tampered_payload_is_refused(tokens: TokenService) -> None:
    header, _payload, signature = tokens.sign({"sub": "u1", "role": "authenticated"}).split(".")
    forged = (
        f"{header}.{_b64({'sub': 'u1', 'role': 'project_admin', 'exp': int(time.time()) + 900})}.{signature}"
    )
    with pytest.raises(InvalidToken):
        tokens.verify(forged)


def test_alg_none_is_refused(tokens: TokenService) -> None:
    unsigned = (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'x', 'role': 'project_admin', 'exp': 9e9})}."
    )
    with pytest.raises(InvalidToken, match="algorithm"):
        tokens.verify(unsigned)


@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_hs256_signed_with_a_public_key_is_refused(
    tokens: TokenService, keys: ProjectKeys, which: str
) -> None:
    import hashlib
    import hmac

    if which == "rsa":
        public_pem = keys.public_key_pem.encode()
    else:
        private = serialization.load_pem_private_key(keys.ec_signing_key_pem.encode(), password=None)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "x", "role": "project_admin", "exp": int(time.time()) + 900})
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        tokens.verify(forged)


def test_expired_token_is_refused(tokens: TokenService) -> None:
    token = tokens.sign({"sub": "u1", "role": "authenticated"}, expires_in=-60)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token)


def test_token_without_expiry_is_refused(tokens: TokenService) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(tokens.sign({"sub": "u1", "role": "authenticated"}, expires_in=None))


def test_token_from_another_project_is_refused(tokens: TokenService, tmp_path: Path) -> None:
    other = TokenService(load_project_keys(Settings(data_dir=tmp_path)))
    with pytest.raises(InvalidToken):
        tokens.verify(other.sign({"sub": "u1", "role": "authenticated"}))
    with pytest.raises(InvalidToken):
        tokens.verify(other.sign_hs256({"sub": "u1", "role": "authenticated"}))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "\u2603.\u2603.\u2603"])
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(garbage)


def test_a_cached_token_still_expires(tokens: TokenService) -> None:
    token = tokens.sign({"sub": "u1", "role": "authenticated"}, expires_in=1)
    assert tokens.verify(token)["sub"] == "u1"
    time.sleep(1.1)
    with pytest.raises(InvalidToken):
        tokens.verify(token)
