"""Sign-up, sign-in, refresh (web cookie + CSRF, and body tokens), logout, stored-session revocation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
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
        ({"email": "bad-input@example.org", "password": "abc"}, "", 400, "INVALID_INPUT"),
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
    assert wrong.json()["error"] == "AUTH_UNAUTHORIZED"


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


def test_a_csrf_token_keyed_with_the_raw_jwt_secret_is_refused(client: TestClient) -> None:
    """The CSRF key is derived from the JWT secret (HKDF, labelled), never the secret itself: an HMAC of the
    refresh cookie under the raw secret (what servers before the derived key handed out) is refused, and
    changes nothing: the token the server gave still refreshes."""
    import hmac

    from tests.support.app import services_of

    email = new_email()
    sign_up(client, email)
    signed_in = web_sign_in(client, email)
    cookie = client.cookies["insforge_refresh_token"]
    secret = services_of(client).core.keys.jwt_secret
    raw = hmac.digest(secret.encode(), cookie.encode(), "sha256").hex()
    assert raw != signed_in.json()["csrfToken"]
    refused = client.post("/api/auth/refresh", headers={"X-CSRF-Token": raw})
    assert (refused.status_code, refused.json()["error"]) == (403, "FORBIDDEN")
    assert "set-cookie" not in refused.headers
    out = client.post("/api/auth/logout", headers={"X-CSRF-Token": raw})
    assert out.status_code == 403
    ok = client.post("/api/auth/refresh", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["email"] == email
    client.cookies.clear()


def test_refresh_without_any_token_is_401(client: TestClient) -> None:
    client.cookies.clear()
    assert client.post("/api/auth/refresh").status_code == 401
    response = client.post("/api/auth/refresh?client_type=mobile", json={})
    assert (response.status_code, response.json()["message"]) == (400, "refreshToken: Required")


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
    assert "already used" in reuse.json()["nextActions"]
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


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/auth/sessions", {"email": "nul\x00@example.com", "password": PASSWORD}),
        ("/api/auth/sessions", {"method": "otp", "email": "a\x00b@example.com", "otp": "123456"}),
        ("/api/auth/users", {"email": "nul\x00@example.com", "password": PASSWORD}),
        ("/api/auth/users", {"email": "named@example.com", "password": PASSWORD, "name": "Ada\x00"}),
        ("/api/auth/email/send-otp", {"email": "nul\x00@example.com"}),
    ],
)
def test_a_nul_character_is_a_400_in_insforges_shape(client: TestClient, path: str, body: Any) -> None:
    """Postgres cannot store NUL in text: refused at the edge, never a 500 from the database."""
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) >= {"error", "message", "statusCode"}
    assert response.json()["error"] == "INVALID_INPUT" and response.json()["statusCode"] == 400


def test_a_nul_character_in_a_profile_is_a_400(client: TestClient) -> None:
    session = sign_up(client)
    for profile in ({"bio": "a\x00b"}, {"a\x00": 1}, {"tags": ["x", {"deep": "\x00"}]}):
        response = client.patch(
            "/api/auth/profiles/current", json={"profile": profile}, headers=bearer(session["accessToken"])
        )
        assert (response.status_code, response.json()["error"]) == (400, "INVALID_INPUT")


def test_a_refresh_token_from_before_numbered_families_still_rotates_once_then_is_spent(
    client: TestClient, database_url: str
) -> None:
    """Sessions stored one row per token (before migration 0052) keep working: the token is spent the old
    way and its family goes on as one numbered row; presenting it again revokes the family."""
    import hashlib
    import hmac
    import time
    import uuid

    from kilnbase.keys.compact_jws import sign_hs256
    from tests.support.app import services_of

    user = sign_up(client)["user"]
    secret = services_of(client).core.keys.jwt_secret
    key = hmac.new(secret.encode(), b"kilnbase:refresh-token:v1", "sha256").digest()
    family, now = str(uuid.uuid4()), int(time.time())
    claims = {"sub": user["id"], "type": "refresh", "iss": "insforge", "kind": "user", "sid": family}
    legacy = sign_hs256({**claims, "jti": "x", "iat": now, "exp": now + 3600}, key)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into auth.sessions (family_id, kind, user_id, subject, token_hash, expires_at) "
            "values (%s, 'user', %s, %s, %s, now() + interval '1 hour')",
            (family, user["id"], user["id"], hashlib.sha256(legacy.encode()).digest()),
        )
    rotated = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": legacy})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["user"]["id"] == user["id"]
    again = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": rotated.json()["refreshToken"]}
    )
    assert again.status_code == 200
    reuse = client.post("/api/auth/refresh?client_type=mobile", json={"refreshToken": legacy})
    assert (reuse.status_code, "already used" in reuse.json()["nextActions"]) == (401, True)
    latest = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": again.json()["refreshToken"]}
    )
    assert latest.status_code == 401
