"""Sign-up, sign-in, refresh (web cookie + CSRF, and body tokens), logout, stored-session revocation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from tests.auth.conftest import auth_settings, new_email, sign_up

PASSWORD = "correct horse 1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def web_sign_in(client: TestClient, email: str) -> Any:
    response = client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response


def test_web_sign_up_sets_an_http_only_cookie_and_returns_csrf(client: TestClient) -> None:
    response = client.post(
        "/api/auth/users", json={"email": new_email(), "password": PASSWORD, "name": "Ada"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"user", "accessToken", "csrfToken"}
    assert body["user"]["profile"] == {"name": "Ada"}
    assert body["user"]["providers"] == ["email"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("insforge_refresh_token=")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "path=/api/auth" in flags
    assert "samesite=lax" in flags
    assert "max-age=604800" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back


def test_mobile_sign_up_returns_the_refresh_token_in_the_body_and_sets_no_cookie(client: TestClient) -> None:
    response = client.post(
        "/api/auth/users?client_type=mobile", json={"email": new_email(), "password": PASSWORD}
    )
    assert response.status_code == 200
    assert "refreshToken" in response.json()
    assert "csrfToken" not in response.json()
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("body", "query", "status", "code"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "", 400, "INVALID_INPUT"),
        ({"email": "bad-input@example.org"}, "", 400, "INVALID_INPUT"),
        ({"email": "bad-input@example.org", "password": 12345678}, "", 400, "INVALID_INPUT"),
        ({"email": "bad-input@example.org", "password": "abc"}, "", 400, "AUTH_WEAK_PASSWORD"),
        ({"email": "bad-input@example.org", "password": PASSWORD}, "?client_type=tv", 400, "INVALID_INPUT"),
        (["not", "an", "object"], "", 400, "INVALID_INPUT"),
    ],
)
def test_bad_sign_up_input_is_refused_and_creates_nothing(
    client: TestClient, admin_headers: dict[str, str], body: Any, query: str, status: int, code: str
) -> None:
    response = client.post(f"/api/auth/users{query}", json=body)
    assert (response.status_code, response.json()["error"]) == (status, code)
    listed = client.get("/api/auth/users?search=bad-input@example.org", headers=admin_headers).json()
    assert listed["pagination"]["total"] == 0


def test_invalid_json_is_a_400(client: TestClient) -> None:
    response = client.post("/api/auth/users", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["statusCode"] == 400


def test_duplicate_email_is_409_and_email_is_case_insensitive(client: TestClient) -> None:
    email = new_email()
    sign_up(client, email)
    response = client.post("/api/auth/users", json={"email": email.upper(), "password": PASSWORD})
    assert (response.status_code, response.json()["error"]) == (409, "AUTH_EMAIL_EXISTS")


def test_wrong_password_and_unknown_email_get_the_same_answer(client: TestClient) -> None:
    email = new_email()
    sign_up(client, email)
    wrong = client.post("/api/auth/sessions", json={"email": email, "password": "wrong password"})
    unknown = client.post("/api/auth/sessions", json={"email": new_email(), "password": "wrong password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "AUTH_INVALID_CREDENTIALS"


def test_web_refresh_needs_the_csrf_header(client: TestClient) -> None:
    email = new_email()
    sign_up(client, email)
    signed_in = web_sign_in(client, email)
    missing = client.post("/api/auth/refresh")
    assert (missing.status_code, missing.json()["error"]) == (403, "FORBIDDEN")
    wrong = client.post("/api/auth/refresh", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    ok = client.post("/api/auth/refresh", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["email"] == email
    assert ok.headers["set-cookie"].startswith("insforge_refresh_token=")
    # The old CSRF token belonged to the old (now rotated) refresh token.
    stale = client.post("/api/auth/refresh", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]})
    assert stale.status_code == 403
    again = client.post("/api/auth/refresh", headers={"X-CSRF-Token": ok.json()["csrfToken"]})
    assert again.status_code == 200
    client.cookies.clear()


def test_refresh_without_any_token_is_401(client: TestClient) -> None:
    client.cookies.clear()
    assert client.post("/api/auth/refresh").status_code == 401
    response = client.post("/api/auth/refresh?client_type=mobile", json={})
    assert (response.status_code, response.json()["error"]) == (401, "AUTH_UNAUTHORIZED")


def test_mobile_refresh_rotates_and_reuse_revokes_the_whole_family(client: TestClient) -> None:
    first = sign_up(client)["refreshToken"]
    rotated = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": first})
    assert rotated.status_code == 200
    second = rotated.json()["refreshToken"]
    assert second != first
    third = client.post("/api/auth/refresh?client_type=server", json={"refresh_token": second}).json()[
        "refreshToken"
    ]
    access = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": third}).json()
    # The first token is presented again: someone holds a stolen copy. Everything in the family dies.
    reuse = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": first})
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["message"]
    latest = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": access["refreshToken"]}
    )
    assert latest.status_code == 401
    current = client.get("/api/auth/sessions/current", headers=bearer(access["accessToken"]))
    assert current.status_code == 401


def test_tampered_refresh_token_is_refused(client: TestClient) -> None:
    token = sign_up(client)["refreshToken"]
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    response = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": f"{head}.{payload}.{flipped}"}
    )
    assert response.status_code == 401


def test_access_token_is_not_a_refresh_token(client: TestClient) -> None:
    access = sign_up(client)["accessToken"]
    response = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": access})
    assert response.status_code == 401


def test_logout_revokes_the_session(client: TestClient) -> None:
    session = sign_up(client)
    out = client.post("/api/auth/logout?client_type=mobile", json={"refreshToken": session["refreshToken"]})
    assert out.status_code == 200
    assert out.json()["success"] is True
    refresh = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert refresh.status_code == 401
    assert client.get("/api/auth/sessions/current", headers=bearer(session["accessToken"])).status_code == 401


def test_logout_with_only_the_access_token_ends_that_session(client: TestClient) -> None:
    session = sign_up(client)
    out = client.post("/api/auth/logout?client_type=mobile", headers=bearer(session["accessToken"]))
    assert out.status_code == 200
    refresh = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert refresh.status_code == 401


def test_web_logout_needs_csrf_and_clears_the_cookie(client: TestClient) -> None:
    email = new_email()
    sign_up(client, email)
    signed_in = web_sign_in(client, email)
    assert client.post("/api/auth/logout").status_code == 403
    out = client.post("/api/auth/logout", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]})
    assert out.status_code == 200
    cookie = out.headers["set-cookie"].lower()
    assert cookie.startswith('insforge_refresh_token="";') or "max-age=0" in cookie
    assert (
        client.get("/api/auth/sessions/current", headers=bearer(signed_in.json()["accessToken"])).status_code
        == 401
    )
    client.cookies.clear()


def test_sign_out_everywhere_revokes_every_session_of_the_user(client: TestClient) -> None:
    email = new_email()
    phone = sign_up(client, email)
    laptop = client.post(
        "/api/auth/sessions?client_type=desktop", json={"email": email, "password": PASSWORD}
    ).json()
    out = client.post(
        "/api/auth/logout?client_type=mobile&scope=global", json={"refreshToken": phone["refreshToken"]}
    )
    assert out.status_code == 200
    for session in (phone, laptop):
        response = client.post(
            "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
        )
        assert response.status_code == 401
    assert client.post("/api/auth/logout?scope=everywhere").status_code == 400


def test_current_session_needs_a_user_token(client: TestClient, admin_headers: dict[str, str]) -> None:
    assert client.get("/api/auth/sessions/current").status_code == 401
    assert client.get("/api/auth/sessions/current", headers=admin_headers).status_code == 401
    session = sign_up(client)
    current = client.get("/api/auth/sessions/current", headers=bearer(session["accessToken"]))
    assert current.status_code == 200
    assert current.json()["user"]["id"] == session["user"]["id"]


def test_logout_with_a_stale_token_still_succeeds_and_touches_nothing_else(client: TestClient) -> None:
    session = sign_up(client)
    out = client.post("/api/auth/logout?client_type=mobile", json={"refreshToken": "not-a-token"})
    assert out.status_code == 200
    assert client.post("/api/auth/logout?client_type=mobile", json={"refreshToken": 5}).status_code == 400
    still = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert still.status_code == 200


def test_admin_logout_does_not_end_a_users_session(client: TestClient) -> None:
    session = sign_up(client)
    out = client.post("/api/auth/admin/logout?client_type=mobile", headers=bearer(session["accessToken"]))
    assert out.status_code == 200
    assert client.get("/api/auth/sessions/current", headers=bearer(session["accessToken"])).status_code == 200


@pytest.fixture(scope="module")
def https_client(settings: Any) -> Iterator[TestClient]:
    """The same project served behind https (its public URL says so)."""
    app = create_app(
        settings.model_copy(update={"public_url": "https://api.example.test", "auth": auth_settings()})
    )
    with TestClient(app, base_url="https://api.example.test", raise_server_exceptions=False) as secure:
        yield secure


def test_over_https_the_cookie_is_secure_and_cross_site(https_client: TestClient) -> None:
    response = https_client.post("/api/auth/users", json={"email": new_email(), "password": PASSWORD})
    flags = [part.strip().lower() for part in response.headers["set-cookie"].split(";")]
    assert "secure" in flags
    assert "samesite=none" in flags
    assert "httponly" in flags
    refreshed = https_client.post("/api/auth/refresh", headers={"X-CSRF-Token": response.json()["csrfToken"]})
    assert refreshed.status_code == 200
