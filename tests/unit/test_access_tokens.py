"""Token verification refuses every forgery we know of."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

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


def test_rs256_round_trip_carries_kid_and_expiry(tokens: TokenService, keys: ProjectKeys) -> None:
    token = tokens.sign({"sub": "u1", "role": "authenticated", "email": "a@b.c"})
    assert jwt.get_unverified_header(token)["kid"] == keys.key_id
    claims = tokens.verify(token)
    assert claims["sub"] == "u1" and claims["exp"] - claims["iat"] == 15 * 60


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


def test_hs256_signed_with_the_public_key_is_refused(tokens: TokenService, keys: ProjectKeys) -> None:
    import hashlib
    import hmac

    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "x", "role": "project_admin", "exp": int(time.time()) + 900})
    mac = hmac.new(keys.public_key_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
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
