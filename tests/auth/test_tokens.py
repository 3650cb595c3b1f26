"""Access tokens: claims, and every way a forged or stale token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import psycopg
import pytest
from starlette.testclient import TestClient

from tests.auth.conftest import sign_up
from tests.support.app import services_of


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


@pytest.fixture(scope="module")
def session(client: TestClient) -> Any:
    return sign_up(client)


def _current(client: TestClient, token: str) -> int:
    return client.get("/api/auth/sessions/current", headers={"Authorization": f"Bearer {token}"}).status_code


def test_access_token_has_insforge_claims_and_verifies_against_the_jwks(
    client: TestClient, session: Any
) -> None:
    token = session["accessToken"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    jwks = client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="authenticated")
    assert claims["sub"] == session["user"]["id"]
    assert claims["email"] == session["user"]["email"]
    assert claims["role"] == "authenticated"
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert _current(client, token) == 200


def test_tampered_signature_is_refused(client: TestClient, session: Any) -> None:
    head, payload, signature = session["accessToken"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    assert _current(client, f"{head}.{payload}.{_b64(bytes(raw))}") == 401


def test_tampered_claims_are_refused(client: TestClient, session: Any) -> None:
    head, payload, signature = session["accessToken"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "project_admin"
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert _current(client, forged) == 401
    assert client.get("/api/auth/users", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_alg_none_is_refused(client: TestClient, session: Any) -> None:
    claims = jwt.decode(session["accessToken"], options={"verify_signature": False})
    token = _unsigned({"alg": "none", "typ": "JWT"}, claims) + "."
    assert _current(client, token) == 401


def test_hs256_signed_with_the_public_key_is_refused(client: TestClient, session: Any) -> None:
    public_pem = services_of(client).core.keys.public_key_pem.encode()
    claims = jwt.decode(session["accessToken"], options={"verify_signature": False})
    claims["role"] = "project_admin"
    kid = jwt.get_unverified_header(session["accessToken"])["kid"]
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(signature)}"
    assert _current(client, token) == 401
    assert client.get("/api/auth/users", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_expired_token_is_refused(client: TestClient, session: Any) -> None:
    tokens = services_of(client).core.tokens
    claims = {"sub": session["user"]["id"], "email": session["user"]["email"], "role": "authenticated"}
    expired = tokens.sign(claims, expires_in=-60)
    response = client.get("/api/auth/sessions/current", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid token"
    assert response.json()["error"] == "AUTH_UNAUTHORIZED"  # what @insforge/sdk refreshes on
    assert "expired" in response.json()["nextActions"]


def test_token_from_another_key_is_refused(client: TestClient, session: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(session["accessToken"], options={"verify_signature": False})
    claims["exp"] = int(time.time()) + 600
    kid = jwt.get_unverified_header(session["accessToken"])["kid"]
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": kid})
    assert _current(client, forged) == 401


def test_refresh_token_lives_seven_days_and_expires_in_the_store_too(
    client: TestClient, database_url: str
) -> None:
    session = sign_up(client)
    claims = jwt.decode(session["refreshToken"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600
    assert claims["type"] == "refresh"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update auth.sessions set expires_at = now() - interval '1 second' where family_id = %s",
            (claims["sid"],),
        )
    response = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert (response.status_code, response.json()["error"]) == (401, "AUTH_UNAUTHORIZED")


def test_an_rs256_token_issued_before_es256_still_works(client: TestClient, session: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    keys = services_of(client).core.keys
    rsa_key = serialization.load_pem_private_key(keys.signing_key_pem.encode(), password=None)
    claims = jwt.decode(session["accessToken"], options={"verify_signature": False})
    earlier = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": keys.key_id})  # type: ignore[arg-type]
    assert _current(client, earlier) == 200
