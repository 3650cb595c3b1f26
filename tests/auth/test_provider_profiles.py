"""Each built-in provider's profile, as that provider's API returns it, becomes the right identity.

The flow itself is one code path, exercised end to end against the loopback OpenID provider in
test_oauth.py; what differs per provider is the shape of its profile (and Apple's client secret), checked here
with payloads in each provider's documented form.
"""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kilnbase.auth.oauth_flow import _apple_client_secret
from kilnbase.auth.oauth_providers import BUILT_IN, UNSUPPORTED_PROVIDERS, spec_for


def test_github_takes_the_primary_verified_address_and_falls_back_to_the_login() -> None:
    identity = BUILT_IN["github"].parse(
        {
            "id": 583231,
            "login": "octocat",
            "name": None,
            "email": "public@example.com",
            "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
            "emails": [
                {"email": "old@example.com", "primary": False, "verified": True},
                {"email": "octo@example.com", "primary": True, "verified": True},
            ],
        }
    )
    assert (identity.account_id, identity.email, identity.email_verified) == (
        "583231",
        "octo@example.com",
        True,
    )
    assert identity.name == "octocat" and "emails" not in identity.raw


def test_github_with_an_unverified_primary_address_is_not_verified() -> None:
    identity = BUILT_IN["github"].parse(
        {
            "id": 1,
            "login": "x",
            "email": "x@example.com",
            "emails": [{"email": "x@example.com", "primary": True, "verified": False}],
        }
    )
    assert identity.email == "x@example.com" and identity.email_verified is False


def test_discord_builds_the_avatar_url_and_reads_verified() -> None:
    identity = BUILT_IN["discord"].parse(
        {
            "id": "80351110224678912",
            "username": "nelly",
            "global_name": "Nelly",
            "avatar": "8342729096ea3675442027381ff50dfe",
            "verified": True,
            "email": "nelly@discord.com",
        }
    )
    assert identity.account_id == "80351110224678912" and identity.name == "Nelly" and identity.email_verified
    assert identity.avatar_url == (
        "https://cdn.discordapp.com/avatars/80351110224678912/8342729096ea3675442027381ff50dfe.png"
    )
    assert BUILT_IN["discord"].parse({"id": "1", "username": "u", "avatar": None}).avatar_url is None


def test_facebook_reads_the_graph_picture_and_email() -> None:
    identity = BUILT_IN["facebook"].parse(
        {
            "id": "10224",
            "name": "Ann Lee",
            "email": "ann@example.com",
            "picture": {"data": {"url": "https://platform-lookaside.fbsbx.com/p.jpg", "height": 50}},
        }
    )
    assert (identity.account_id, identity.email, identity.email_verified) == (
        "10224",
        "ann@example.com",
        True,
    )
    assert identity.avatar_url == "https://platform-lookaside.fbsbx.com/p.jpg"
    assert BUILT_IN["facebook"].parse({"id": "2", "name": "No Mail"}).email_verified is False


def test_x_reads_the_data_envelope_and_confirmed_email() -> None:
    identity = BUILT_IN["x"].parse(
        {
            "data": {
                "id": "2244994945",
                "name": "X Dev",
                "username": "XDevelopers",
                "profile_image_url": "https://pbs.twimg.com/p.jpg",
                "confirmed_email": "dev@x.com",
            }
        }
    )
    assert (identity.account_id, identity.email, identity.email_verified) == ("2244994945", "dev@x.com", True)
    assert BUILT_IN["x"].parse({"data": {"id": "1", "username": "anon"}}).name == "anon"
    assert BUILT_IN["x"].client_auth_method == "client_secret_basic"


@pytest.mark.parametrize("provider", ["google", "linkedin", "apple"])
def test_openid_providers_read_standard_claims(provider: str) -> None:
    identity = BUILT_IN[provider].parse(
        {
            "sub": "abc-123",
            "email": "a@example.com",
            "email_verified": "true",
            "name": "A",
            "picture": "https://p/a",
        }
    )
    assert (identity.account_id, identity.email, identity.email_verified) == (
        "abc-123",
        "a@example.com",
        True,
    )
    assert BUILT_IN[provider].parse({"sub": "s", "email": "b@example.com"}).email_verified is False


def test_microsoft_addresses_are_never_trusted_for_linking() -> None:
    identity = BUILT_IN["microsoft"].parse({"sub": "ms-1", "email": "m@example.com", "email_verified": True})
    assert identity.email == "m@example.com" and identity.email_verified is False


def test_every_supported_provider_is_built_in_and_can_be_repointed() -> None:
    supported = {"google", "github", "discord", "microsoft", "linkedin", "facebook", "x", "apple"}
    assert supported <= set(BUILT_IN) and not supported & UNSUPPORTED_PROVIDERS
    spec = spec_for("github", {"github": {"token_url": "http://127.0.0.1:9/token"}})
    assert spec.endpoints.token_url == "http://127.0.0.1:9/token"
    assert spec.endpoints.authorize_url == BUILT_IN["github"].endpoints.authorize_url


def test_apple_client_secret_is_an_es256_jwt_from_the_team_key() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    stored = json.dumps({"teamId": "TEAM123456", "keyId": "KEY7890", "privateKey": pem})
    secret = _apple_client_secret("com.example.web", stored)
    assert jwt.get_unverified_header(secret) == {"alg": "ES256", "kid": "KEY7890", "typ": "JWT"}
    claims = jwt.decode(
        secret, private_key.public_key(), algorithms=["ES256"], audience="https://appleid.apple.com"
    )
    assert (claims["iss"], claims["sub"]) == ("TEAM123456", "com.example.web")
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert _apple_client_secret("com.example.web", "plain-secret") == "plain-secret"
