"""Admin endpoints: auth config, user management, root admin sign-in, the deprecated anon-token route,
imported bcrypt hashes, profiles, and the audit trail of every admin change."""

from __future__ import annotations

from typing import Any

import bcrypt
import psycopg
import pytest
from starlette.testclient import TestClient

from tests.auth.conftest import new_email, sign_up
from tests.support.app import services_of
from tests.support.smtp_server import SmtpServer

PASSWORD = "correct horse 1"


def audit_actions(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select action from system.audit_logs order by created_at").fetchall()
    return [r[0] for r in rows]


def test_public_config_has_the_sdk_shape_and_hides_the_allow_list(client: TestClient) -> None:
    body = client.get("/api/auth/public-config").json()
    assert body["oAuthProviders"] == []
    assert body["customOAuthProviders"] == []
    for field in (
        "requireEmailVerification",
        "passwordMinLength",
        "verifyEmailMethod",
        "resetPasswordMethod",
    ):
        assert field in body
    assert "allowedRedirectUrls" not in body
    assert "id" not in body


def test_config_needs_admin(client: TestClient) -> None:
    assert client.get("/api/auth/config").status_code == 401
    token = sign_up(client)["accessToken"]
    response = client.put(
        "/api/auth/config", json={"disableSignup": True}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"passwordMinLength": 3}, "passwordMinLength: Number must be greater than or equal to 4"),
        ({"passwordMinLength": "8"}, "passwordMinLength: Expected number, received string"),
        (
            {"verifyEmailMethod": "carrier-pigeon"},
            "verifyEmailMethod: Invalid enum value. Expected 'code' | 'link', received 'carrier-pigeon'",
        ),
        (
            {"allowedRedirectUrls": ["javascript:alert(1)"]},
            "allowedRedirectUrls.0: Invalid URL or wildcard URL",
        ),
        # A null setting is refused as zod refuses it (it was a 500: every column is NOT NULL).
        ({"requireEmailVerification": None}, "requireEmailVerification: Expected boolean, received null"),
        ({"disableSignup": None}, "disableSignup: Expected boolean, received null"),
        (
            {"passwordMinLength": None, "resetPasswordMethod": None},
            "passwordMinLength: Expected number, received null, "
            "resetPasswordMethod: Expected 'code' | 'link', received null",
        ),
    ],
)
def test_bad_config_is_refused_in_insforges_words_and_changes_nothing(
    client: TestClient, admin_headers: dict[str, str], change: dict[str, Any], message: str
) -> None:
    before = client.get("/api/auth/config", headers=admin_headers).json()
    response = client.put("/api/auth/config", json=change, headers=admin_headers)
    assert (response.status_code, response.json()["error"], response.json()["message"]) == (
        400,
        "INVALID_INPUT",
        message,
    )
    assert client.get("/api/auth/config", headers=admin_headers).json() == before


def test_a_null_redirect_allow_list_empties_it(client: TestClient, admin_headers: dict[str, str]) -> None:
    """InsForge's schema takes `allowedRedirectUrls: null` and reads a null list as an empty one."""
    listed = {"allowedRedirectUrls": ["https://app.example.com/*"]}
    assert client.put("/api/auth/config", json=listed, headers=admin_headers).status_code == 200
    emptied = client.put("/api/auth/config", json={"allowedRedirectUrls": None}, headers=admin_headers)
    assert (emptied.status_code, emptied.json()["allowedRedirectUrls"]) == (200, [])
    assert client.get("/api/auth/config", headers=admin_headers).json()["allowedRedirectUrls"] == []


def test_a_config_read_back_can_be_put_as_it_is(client: TestClient, admin_headers: dict[str, str]) -> None:
    current = client.get("/api/auth/config", headers=admin_headers).json()
    echoed = client.put("/api/auth/config", json={**current, "unknownField": True}, headers=admin_headers)
    assert echoed.status_code == 200, echoed.text
    assert {k: v for k, v in echoed.json().items() if k != "updatedAt"} == {
        k: v for k, v in current.items() if k != "updatedAt"
    }


def test_password_policy_applies_to_sign_up(
    client: TestClient, admin_headers: dict[str, str], database_url: str
) -> None:
    change = {"passwordMinLength": 10, "requireNumber": True, "requireUppercase": True}
    updated = client.put("/api/auth/config", json=change, headers=admin_headers)
    assert updated.status_code == 200
    assert updated.json()["passwordMinLength"] == 10
    assert "UPDATE_AUTH_CONFIG" in audit_actions(database_url)
    try:
        weak = client.post("/api/auth/users", json={"email": new_email(), "password": "lowercase1"})
        assert (weak.status_code, weak.json()["error"]) == (400, "INVALID_INPUT")
        assert "uppercase" in weak.json()["message"]
        assert (
            client.post("/api/auth/users", json={"email": new_email(), "password": "Uppercase12"}).status_code
            == 200
        )
        assert client.get("/api/auth/public-config").json()["passwordMinLength"] == 10
    finally:
        reset = {"passwordMinLength": 6, "requireNumber": False, "requireUppercase": False}
        client.put("/api/auth/config", json=reset, headers=admin_headers)


def test_disable_signup_stops_anon_but_not_admin(client: TestClient, admin_headers: dict[str, str]) -> None:
    client.put("/api/auth/config", json={"disableSignup": True}, headers=admin_headers)
    try:
        blocked = client.post("/api/auth/users", json={"email": new_email(), "password": PASSWORD})
        assert blocked.status_code == 403
        created = client.post(
            "/api/auth/users", json={"email": new_email(), "password": PASSWORD}, headers=admin_headers
        )
        assert created.status_code == 200
        assert created.json()["accessToken"] is None
        assert "set-cookie" not in created.headers
    finally:
        client.put("/api/auth/config", json={"disableSignup": False}, headers=admin_headers)


def test_email_verification_requirement_and_admin_auto_confirm(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer
) -> None:
    client.put("/api/auth/config", json={"requireEmailVerification": True}, headers=admin_headers)
    try:
        email = new_email()
        pending = client.post(
            "/api/auth/users", json={"email": email, "password": PASSWORD, "autoConfirm": True}
        )
        assert pending.status_code == 200
        assert pending.json()["accessToken"] is None
        assert pending.json()["requireEmailVerification"] is True
        assert pending.json()["user"]["emailVerified"] is False  # autoConfirm from a non-admin is ignored
        refused = client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD})
        assert (refused.status_code, refused.json()["error"]) == (403, "FORBIDDEN")
        confirmed_email = new_email()
        confirmed = client.post(
            "/api/auth/users",
            json={"email": confirmed_email, "password": PASSWORD, "autoConfirm": True},
            headers=admin_headers,
        )
        assert confirmed.json()["user"]["emailVerified"] is True
        ok = client.post("/api/auth/sessions", json={"email": confirmed_email, "password": PASSWORD})
        assert ok.status_code == 200
    finally:
        client.put("/api/auth/config", json={"requireEmailVerification": False}, headers=admin_headers)


def test_user_list_search_get_delete(
    client: TestClient, admin_headers: dict[str, str], database_url: str
) -> None:
    first = sign_up(client, name="Searchable Person")["user"]
    second = sign_up(client)["user"]
    listed = client.get("/api/auth/users?limit=2&offset=0", headers=admin_headers).json()
    assert len(listed["data"]) == 2
    assert listed["pagination"]["limit"] == 2
    assert listed["pagination"]["total"] >= 2
    found = client.get("/api/auth/users?search=searchable", headers=admin_headers).json()
    assert [u["id"] for u in found["data"]] == [first["id"]]
    assert (
        client.get(f"/api/auth/users/{first['id']}", headers=admin_headers).json()["email"] == first["email"]
    )
    assert client.get("/api/auth/users/not-a-uuid", headers=admin_headers).status_code == 400
    # InsForge reads limit and offset leniently (parseInt, the default when that fails or is 0).
    lenient = client.get("/api/auth/users?limit=0&offset=-3", headers=admin_headers).json()["pagination"]
    assert (lenient["limit"], lenient["offset"]) == (10, 0)
    assert client.get("/api/auth/users?limit=2abc", headers=admin_headers).json()["pagination"]["limit"] == 2
    assert (
        client.get("/api/auth/users?limit=99999", headers=admin_headers).json()["pagination"]["limit"] == 1000
    )
    assert client.get("/api/auth/users?limit=ten", headers=admin_headers).json()["pagination"]["limit"] == 10
    # Past the 4,300 digits Python's int reads (once a 500), and with digits JavaScript's parseInt does not
    # read (Arabic-Indic twelve: the default), and leading zeros.
    for raw, limit in (("9" * 5000, 1000), ("\u0661\u0662", 10), ("0" * 30 + "7", 7)):
        answer = client.get("/api/auth/users", params={"limit": raw}, headers=admin_headers)
        assert (answer.status_code, answer.json()["pagination"]["limit"]) == (200, limit), raw[:40]
    bad = client.request("DELETE", "/api/auth/users", json={"userIds": ["nope"]}, headers=admin_headers)
    assert bad.status_code == 400
    assert (
        client.request("DELETE", "/api/auth/users", json={"userIds": []}, headers=admin_headers).status_code
        == 400
    )
    deleted = client.request(
        "DELETE", "/api/auth/users", json={"userIds": [first["id"], second["id"]]}, headers=admin_headers
    )
    assert deleted.json() == {"message": "Users deleted successfully", "deletedCount": 2}
    assert client.get(f"/api/auth/users/{first['id']}", headers=admin_headers).status_code == 404
    assert "DELETE_USERS" in audit_actions(database_url)


def test_user_endpoints_need_admin(client: TestClient) -> None:
    token = sign_up(client)["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/auth/users", headers=headers).status_code == 403
    assert (
        client.request("DELETE", "/api/auth/users", json={"userIds": []}, headers=headers).status_code == 403
    )


def test_deleting_a_user_ends_their_sessions(client: TestClient, admin_headers: dict[str, str]) -> None:
    session = sign_up(client)
    client.request(
        "DELETE", "/api/auth/users", json={"userIds": [session["user"]["id"]]}, headers=admin_headers
    )
    response = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": session["refreshToken"]}
    )
    assert response.status_code == 401


def test_profiles(client: TestClient) -> None:
    session = sign_up(client, name="Grace")
    headers = {"Authorization": f"Bearer {session['accessToken']}"}
    updated = client.patch(
        "/api/auth/profiles/current", json={"profile": {"bio": "compilers"}}, headers=headers
    )
    assert updated.status_code == 200
    assert updated.json() == {"id": session["user"]["id"], "profile": {"name": "Grace", "bio": "compilers"}}
    public = client.get(f"/api/auth/profiles/{session['user']['id']}").json()
    assert public["profile"]["bio"] == "compilers"
    assert "email" not in public
    assert client.patch("/api/auth/profiles/current", json={"profile": {"bio": "x"}}).status_code == 401
    assert (
        client.patch("/api/auth/profiles/current", json={"profile": "x"}, headers=headers).status_code == 400
    )
    assert client.get("/api/auth/profiles/not-a-uuid").status_code == 400
    assert client.get("/api/auth/profiles/00000000-0000-4000-8000-000000000000").status_code == 404


def test_root_admin_sign_in_refresh_and_logout(client: TestClient, settings: Any, database_url: str) -> None:
    client.cookies.clear()
    password = services_of(client).core.keys.root_admin_password
    username = settings.root_admin_username
    wrong = client.post("/api/auth/admin/sessions", json={"username": username, "password": password + "x"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "AUTH_UNAUTHORIZED")
    assert client.post("/api/auth/admin/sessions", json={"password": password}).status_code == 400
    signed_in = client.post("/api/auth/admin/sessions", json={"email": username, "password": password})
    assert signed_in.status_code == 200
    assert signed_in.headers["set-cookie"].startswith("insforge_admin_refresh_token=")
    headers = {"Authorization": f"Bearer {signed_in.json()['accessToken']}"}
    assert client.get("/api/auth/users", headers=headers).status_code == 200
    assert client.get("/api/auth/admin/sessions/current", headers=headers).status_code == 200
    # A user's refresh cookie endpoint does not accept the admin's cookie.
    assert (
        client.post("/api/auth/refresh", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]}).status_code
        == 401
    )
    refreshed = client.post(
        "/api/auth/admin/refresh", headers={"X-CSRF-Token": signed_in.json()["csrfToken"]}
    )
    assert refreshed.status_code == 200
    out = client.post("/api/auth/admin/logout", headers={"X-CSRF-Token": refreshed.json()["csrfToken"]})
    assert out.status_code == 200
    assert client.get("/api/auth/admin/sessions/current", headers=headers).status_code == 401
    assert "ADMIN_SIGN_IN" in audit_actions(database_url)
    client.cookies.clear()


def test_deprecated_anon_token_route(client: TestClient, admin_headers: dict[str, str]) -> None:
    anon_key = services_of(client).core.keys.anon_key
    assert client.post("/api/auth/tokens/anon", headers=admin_headers).json()["accessToken"] == anon_key
    assert client.post("/api/auth/tokens/anon").status_code == 401
    assert (
        client.post("/api/auth/tokens/anon", headers={"Authorization": f"Bearer {anon_key}"}).status_code
        == 401
    )


def test_imported_bcrypt_hash_signs_in_and_is_rehashed(client: TestClient, database_url: str) -> None:
    email = new_email()
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2a$")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into auth.users (email, password, email_verified) values (%s, %s, true)", (email, legacy)
        )
    wrong = client.post("/api/auth/sessions", json={"email": email, "password": "not it"})
    assert wrong.status_code == 401
    ok = client.post("/api/auth/sessions?client_type=mobile", json={"email": email, "password": PASSWORD})
    assert ok.status_code == 200
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("select password from auth.users where email = %s", (email,)).fetchone()
    assert stored is not None
    assert stored[0].startswith("$argon2id$")
    again = client.post("/api/auth/sessions?client_type=mobile", json={"email": email, "password": PASSWORD})
    assert again.status_code == 200


def test_admin_sign_up_is_audited(
    client: TestClient, admin_headers: dict[str, str], database_url: str
) -> None:
    client.post("/api/auth/users", json={"email": new_email(), "password": PASSWORD}, headers=admin_headers)
    assert "CREATE_USER" in audit_actions(database_url)
