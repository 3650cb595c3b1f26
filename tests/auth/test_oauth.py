"""OAuth against a real OpenID provider on loopback: the PKCE-style flow InsForge's SDK uses, built-in
providers pointed at the test provider, custom OIDC by discovery, linking, and the ways the flow is attacked.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.auth.conftest import PASSWORD, auth_settings, new_email
from tests.support.oidc_provider import OidcProvider, ProviderUser

APP = "http://localhost:3000"
REDIRECT = f"{APP}/auth/callback"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def client(settings: Settings, provider: OidcProvider) -> Iterator[TestClient]:
    endpoints = {name: provider.endpoints_for(name) for name in ("google", "github", "discord")}
    app = create_app(settings.model_copy(update={"auth": auth_settings(oauth_endpoints=endpoints)}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def configured(client: TestClient, admin_headers: dict[str, str], provider: OidcProvider) -> None:
    for name in ("google", "github", "discord"):
        body = {"provider": name, "clientId": provider.client_id, "clientSecret": provider.client_secret}
        assert client.post("/api/auth/oauth/configs", json=body, headers=admin_headers).status_code == 200
    custom = {
        "key": "acme",
        "name": "Acme SSO",
        "discoveryEndpoint": f"{provider.issuer}/.well-known/openid-configuration",
        "clientId": provider.client_id,
        "clientSecret": provider.client_secret,
    }
    assert (
        client.post("/api/auth/oauth/custom/configs", json=custom, headers=admin_headers).status_code == 200
    )
    config = {"allowedRedirectUrls": [APP]}
    assert client.put("/api/auth/config", json=config, headers=admin_headers).status_code == 200


def begin(client: TestClient, start: str, redirect: str = REDIRECT) -> tuple[str, str]:
    """Start a flow and let the provider approve it: (our verifier, the callback path with code and state)."""
    verifier = secrets.token_urlsafe(48)
    started = client.get(start, params={"redirect_uri": redirect, "code_challenge": s256(verifier)})
    assert started.status_code == 200, started.text
    at_provider = httpx.get(started.json()["authUrl"], follow_redirects=False)
    assert at_provider.status_code in (302, 307), at_provider.text
    back = urlsplit(at_provider.headers["location"])
    return verifier, f"{back.path}?{back.query}"


def come_back(client: TestClient, callback: str) -> dict[str, list[str]]:
    response = client.get(callback, follow_redirects=False)
    assert response.status_code == 302, response.text
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT
    return parse_qs(target.query)


def sign_in(client: TestClient, start: str) -> Any:
    verifier, callback = begin(client, start)
    code = come_back(client, callback)["insforge_code"][0]
    exchanged = client.post(
        "/api/auth/oauth/exchange?client_type=mobile", json={"code": code, "code_verifier": verifier}
    )
    assert exchanged.status_code == 200, exchanged.text
    return exchanged.json()


def test_provider_configs_are_admin_only_and_keep_secrets(
    client: TestClient,
    admin_headers: dict[str, str],
    configured: None,
    provider: OidcProvider,
    database_url: str,
) -> None:
    listed = client.get("/api/auth/oauth/configs", headers=admin_headers).json()
    assert listed["count"] == 3
    assert provider.client_secret not in str(listed)
    assert all(c["hasClientSecret"] for c in listed["data"])
    duplicate = {"provider": "google", "clientId": "x", "clientSecret": "y"}
    assert client.post("/api/auth/oauth/configs", json=duplicate, headers=admin_headers).status_code == 409
    unknown = {"provider": "myspace", "clientId": "x"}
    assert client.post("/api/auth/oauth/configs", json=unknown, headers=admin_headers).status_code == 400
    shared = {"provider": "apple", "useSharedKey": True}
    assert client.post("/api/auth/oauth/configs", json=shared, headers=admin_headers).status_code == 400
    assert client.get("/api/auth/oauth/configs").status_code == 401
    created = client.post(
        "/api/auth/oauth/configs", json={"provider": "linkedin", "clientId": "li"}, headers=admin_headers
    )
    assert created.status_code == 200
    updated = client.put(
        "/api/auth/oauth/linkedin/config", json={"scopes": ["openid"]}, headers=admin_headers
    )
    assert updated.json()["scopes"] == ["openid"]
    assert client.get("/api/auth/oauth/linkedin/config", headers=admin_headers).json()["clientId"] == "li"
    assert client.delete("/api/auth/oauth/linkedin/config", headers=admin_headers).status_code == 200
    assert client.get("/api/auth/oauth/linkedin/config", headers=admin_headers).status_code == 404
    custom = client.get("/api/auth/oauth/custom/configs", headers=admin_headers).json()
    assert [c["key"] for c in custom["data"]] == ["acme"]
    bad_key = {
        "key": "Bad Key",
        "name": "x",
        "discoveryEndpoint": "https://x.test",
        "clientId": "a",
        "clientSecret": "b",
    }
    assert (
        client.post("/api/auth/oauth/custom/configs", json=bad_key, headers=admin_headers).status_code == 400
    )
    with psycopg.connect(database_url) as conn:
        actions = {r[0] for r in conn.execute("select action from system.audit_logs").fetchall()}
    assert {
        "CREATE_OAUTH_CONFIG",
        "UPDATE_OAUTH_CONFIG",
        "DELETE_OAUTH_CONFIG",
        "CREATE_CUSTOM_OAUTH_CONFIG",
    } <= actions
    public = client.get("/api/auth/public-config").json()
    assert public["oAuthProviders"] == ["discord", "github", "google"]
    assert public["customOAuthProviders"] == ["acme"]


def test_google_flow_with_pkce_signs_in_a_new_verified_user(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    provider.next_user = ProviderUser(f"google-{email}", email, True, "Gee Person")
    session = sign_in(client, "/api/auth/oauth/google")
    assert session["user"]["email"] == email
    assert session["user"]["emailVerified"] is True
    assert session["user"]["providers"] == ["google"]
    assert session["user"]["profile"]["name"] == "Gee Person"
    # The server used PKCE and its client secret towards the provider.
    last = provider.token_requests[-1]
    assert last["code_verifier"]
    assert last["client_secret"] == provider.client_secret
    # Signing in again with the same identity finds the same user.
    assert sign_in(client, "/api/auth/oauth/google")["user"]["id"] == session["user"]["id"]


def test_the_one_time_code_works_once_and_only_with_the_right_verifier(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    provider.next_user = ProviderUser(secrets.token_hex(4), new_email())
    verifier, callback = begin(client, "/api/auth/oauth/google")
    code = come_back(client, callback)["insforge_code"][0]
    wrong = client.post(
        "/api/auth/oauth/exchange", json={"code": code, "code_verifier": secrets.token_urlsafe(48)}
    )
    assert wrong.status_code == 400
    assert (wrong.json()["error"], wrong.json()["message"]) == (
        "AUTH_UNAUTHORIZED",
        "PKCE verification failed",
    )
    # A wrong verifier burns the code: the right one no longer helps.
    assert (
        client.post("/api/auth/oauth/exchange", json={"code": code, "code_verifier": verifier}).status_code
        == 400
    )
    verifier, callback = begin(client, "/api/auth/oauth/google")
    code = come_back(client, callback)["insforge_code"][0]
    body = {"code": code, "code_verifier": verifier}
    assert client.post("/api/auth/oauth/exchange?client_type=mobile", json=body).status_code == 200
    assert client.post("/api/auth/oauth/exchange?client_type=mobile", json=body).status_code == 400
    assert (
        client.post("/api/auth/oauth/exchange", json={"code": code, "code_verifier": "short"}).status_code
        == 400
    )


def test_state_tampering_and_replay_are_refused(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    provider.next_user = ProviderUser(secrets.token_hex(4), new_email())
    _verifier, callback = begin(client, "/api/auth/oauth/google")
    path, query = callback.split("?")
    params = parse_qs(query)
    tampered = f"{path}?code={params['code'][0]}&state={params['state'][0][:-2]}xx"
    assert client.get(tampered, follow_redirects=False).status_code == 400
    assert client.get(f"{path}?code={params['code'][0]}", follow_redirects=False).status_code == 400
    # The untouched callback still works once, then never again.
    assert "insforge_code" in come_back(client, callback)
    assert client.get(callback, follow_redirects=False).status_code == 400
    # A state issued for GitHub is no good at Google's callback.
    _verifier, github_callback = begin(client, "/api/auth/oauth/github")
    moved = github_callback.replace("/oauth/github/callback", "/oauth/google/callback")
    assert client.get(moved, follow_redirects=False).status_code == 400


def test_start_validates_its_input(
    client: TestClient, configured: None, admin_headers: dict[str, str]
) -> None:
    challenge = s256(secrets.token_urlsafe(48))
    evil = client.get(
        "/api/auth/oauth/google", params={"redirect_uri": "https://evil.test/cb", "code_challenge": challenge}
    )
    assert evil.status_code == 400
    short = client.get("/api/auth/oauth/google", params={"redirect_uri": REDIRECT, "code_challenge": "abc"})
    assert short.status_code == 400
    assert client.get("/api/auth/oauth/google", params={"code_challenge": challenge}).status_code == 400
    unsupported = client.get(
        "/api/auth/oauth/instagram", params={"redirect_uri": REDIRECT, "code_challenge": challenge}
    )
    assert unsupported.json()["error"] == "INVALID_INPUT"
    unconfigured = client.get(
        "/api/auth/oauth/facebook", params={"redirect_uri": REDIRECT, "code_challenge": challenge}
    )
    assert unconfigured.json()["error"] == "AUTH_OAUTH_CONFIG_ERROR"
    missing = client.get(
        "/api/auth/oauth/custom/nope", params={"redirect_uri": REDIRECT, "code_challenge": challenge}
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "extra",
    [
        {"code_verifier": "v" * 43},
        {"url": "https://evil.test"},
        {"request_uri": "https://evil.test/request.jwt"},
        {"code_challenge_method": "plain"},
    ],
)
def test_a_start_with_a_parameter_it_must_not_pass_is_a_400(
    client: TestClient, configured: None, extra: dict[str, str]
) -> None:
    """Unauthenticated, as the SDK starts it: each was a 500 (or passed on to the provider) before."""
    params = {"redirect_uri": REDIRECT, "code_challenge": s256(secrets.token_urlsafe(48)), **extra}
    response = client.get("/api/auth/oauth/google", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_INPUT" and response.json()["statusCode"] == 400
    assert response.json()["nextActions"]


def test_provider_parameters_of_the_allow_list_reach_the_provider(
    client: TestClient, configured: None
) -> None:
    challenge = s256(secrets.token_urlsafe(48))
    params = {"redirect_uri": REDIRECT, "code_challenge": challenge, "prompt": "consent", "scope": "ignored"}
    started = client.get("/api/auth/oauth/google", params=params)
    assert started.status_code == 200, started.text
    query = parse_qs(urlsplit(started.json()["authUrl"]).query)
    assert query["prompt"] == ["consent"]
    assert query["scope"] != ["ignored"]  # the flow's own parameters are the configured ones


def test_github_shaped_provider_through_the_same_path(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    provider.next_user = ProviderUser("gh-user", email, True, "Octo Cat")
    session = sign_in(client, "/api/auth/oauth/github")
    assert session["user"]["email"] == email
    assert session["user"]["providers"] == ["github"]
    assert session["user"]["profile"]["name"] == "Octo Cat"


def test_custom_oidc_provider_by_discovery(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    provider.next_user = ProviderUser("acme-1", email, True, "Acme Person")
    session = sign_in(client, "/api/auth/oauth/custom/acme")
    assert session["user"]["email"] == email
    assert session["user"]["providers"] == ["custom:acme"]


def test_verified_email_links_to_an_existing_verified_account(
    client: TestClient, admin_headers: dict[str, str], configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    created = client.post(
        "/api/auth/users",
        json={"email": email, "password": PASSWORD, "autoConfirm": True},
        headers=admin_headers,
    ).json()["user"]
    provider.next_user = ProviderUser(secrets.token_hex(4), email, True)
    session = sign_in(client, "/api/auth/oauth/discord")
    assert session["user"]["id"] == created["id"]
    assert session["user"]["providers"] == ["email", "discord"]
    assert (
        client.post(
            "/api/auth/sessions?client_type=mobile", json={"email": email, "password": PASSWORD}
        ).status_code
        == 200
    )


def test_linking_to_an_unverified_account_drops_the_squatters_password(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    squatter = client.post(
        "/api/auth/users?client_type=mobile", json={"email": email, "password": PASSWORD}
    ).json()
    provider.next_user = ProviderUser(secrets.token_hex(4), email, True)
    session = sign_in(client, "/api/auth/oauth/google")
    assert session["user"]["id"] == squatter["user"]["id"]
    assert session["user"]["providers"] == ["google"]
    assert client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD}).status_code == 401
    stale = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": squatter["refreshToken"]}
    )
    assert stale.status_code == 401


def test_an_unverified_provider_email_never_links(
    client: TestClient, configured: None, provider: OidcProvider
) -> None:
    email = new_email()
    client.post("/api/auth/users?client_type=mobile", json={"email": email, "password": PASSWORD})
    provider.next_user = ProviderUser(secrets.token_hex(4), email, False)
    _verifier, callback = begin(client, "/api/auth/oauth/google")
    assert come_back(client, callback) == {"error": ["email_exists"]}


@pytest.mark.parametrize("knob", ["sign_with_wrong_key", "wrong_nonce"])
def test_a_bad_id_token_fails_the_sign_in(
    client: TestClient, configured: None, provider: OidcProvider, knob: str
) -> None:
    provider.next_user = ProviderUser(secrets.token_hex(4), new_email())
    setattr(provider, knob, True)
    try:
        _verifier, callback = begin(client, "/api/auth/oauth/custom/acme")
        assert come_back(client, callback) == {"error": ["oauth_failed"]}
    finally:
        setattr(provider, knob, False)


def test_a_provider_error_is_passed_to_the_app(client: TestClient, configured: None) -> None:
    verifier = secrets.token_urlsafe(48)
    started = client.get(
        "/api/auth/oauth/google", params={"redirect_uri": REDIRECT, "code_challenge": s256(verifier)}
    )
    state = parse_qs(urlsplit(started.json()["authUrl"]).query)["state"][0]
    back = come_back(client, f"/api/auth/oauth/google/callback?error=access_denied&state={state}")
    assert back == {"error": ["access_denied"]}


def test_id_token_sign_in_checks_audience_signature_expiry_and_nonce(
    client: TestClient, admin_headers: dict[str, str], configured: None, provider: OidcProvider
) -> None:
    client.put("/api/auth/oauth/google/config", json={"nativeClientIds": ["ios-app"]}, headers=admin_headers)
    email = new_email()
    user = ProviderUser(secrets.token_hex(4), email)
    ok = client.post(
        "/api/auth/id-token?client_type=mobile",
        json={"provider": "google", "token": provider.mint_id_token(user)},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["email"] == email
    assert ok.json()["refreshToken"]
    native = provider.mint_id_token(user, aud="ios-app", nonce="raw-nonce")
    hashed_nonce = provider.mint_id_token(user, nonce=hashlib.sha256(b"raw-nonce").hexdigest())
    for token in (native, hashed_nonce):
        body = {"provider": "google", "token": token, "nonce": "raw-nonce"}
        response = client.post("/api/auth/id-token?client_type=mobile", json=body)
        assert response.json()["user"]["id"] == ok.json()["user"]["id"]
    refused = [
        {"provider": "google", "token": provider.mint_id_token(user, aud="someone-else")},
        {"provider": "google", "token": provider.mint_id_token(user, lifetime=-120)},
        {"provider": "google", "token": provider.mint_id_token(user, nonce="a"), "nonce": "b"},
        {"provider": "google", "token": "not.a.jwt"},
    ]
    for body in refused:  # (InsForge's answer for a Google token that does not verify)
        response = client.post("/api/auth/id-token", json=body)
        assert (response.status_code, response.json()["message"]) == (400, "Failed to verify Google ID token")
    provider.sign_with_wrong_key = True
    try:
        forged = provider.mint_id_token(user)
    finally:
        provider.sign_with_wrong_key = False
    assert client.post("/api/auth/id-token", json={"provider": "google", "token": forged}).status_code == 400
    github = client.post("/api/auth/id-token", json={"provider": "github", "token": forged})
    assert (github.status_code, github.json()["message"]) == (
        400,
        "provider: Invalid discriminator value. Expected 'google' | 'apple'",
    )
    no_nonce = client.post("/api/auth/id-token", json={"provider": "apple", "token": forged})
    assert (no_nonce.status_code, no_nonce.json()["message"]) == (400, "nonce: Required")
    apple = {"provider": "apple", "token": forged, "nonce": "n"}
    assert client.post("/api/auth/id-token", json=apple).json()["error"] == "AUTH_OAUTH_CONFIG_ERROR"
