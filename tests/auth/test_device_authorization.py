"""Device authorization (`/api/auth/device/...`, InsForge's contract): a device starts, a signed-in user looks
the code up and approves or denies it, the device polls for a session. Every answer a client or the page sees,
the single use under concurrency, the binding of a code to one user, expiry, limits, and the page itself.

Waiting out the poll interval is done by dropping the poll counters (`waited`), and expiry by moving
`expires_at` in the database: no test sleeps."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.auth.conftest import auth_settings, sign_up
from tests.support.app import admin_headers, services_of
from tests.support.side_sql import Sql, sql_runner

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ROOMY_DEVICES = {"device_authorization_limit": 1000, "device_user_code_limit": 1000}
Headers = dict[str, str]


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"auth": auth_settings(**ROOMY_DEVICES)}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def sql(database_url: str) -> Iterator[Sql]:
    with sql_runner(database_url) as run:
        yield run


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def new_user(client: TestClient) -> dict[str, Any]:
    """A signed-up user's session: `{user, accessToken, refreshToken}`."""
    session: dict[str, Any] = sign_up(client)
    return session


def start(client: TestClient, **context: Any) -> dict[str, Any]:
    """A new code pair for a device named uniquely (so the test can find its row)."""
    context = {"deviceName": f"laptop-{secrets.token_hex(4)}", **context}
    response = client.post("/api/auth/device/authorizations", json=context)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body["deviceName"] = context["deviceName"]
    return body


def poll(client: TestClient, device_code: str) -> Any:
    return client.post("/api/auth/device/token", json={"deviceCode": device_code, "grantType": GRANT})


def waited(sql: Sql) -> None:
    """As if the device had waited its interval: the poll counters start again."""
    sql("delete from system.rate_limits where key like 'device-poll:%%'")


def decide(client: TestClient, verb: str, user_code: str, token: str) -> Any:
    return client.post(
        f"/api/auth/device/authorizations/{verb}", json={"userCode": user_code}, headers=bearer(token)
    )


def row_of(sql: Sql, device: dict[str, Any]) -> dict[str, Any]:
    rows = sql(
        "select id, status, approved_by_user_id::text as bound, consumed_at from auth.device_authorizations "
        "where client_context->>'deviceName' = %s",
        device["deviceName"],
    )
    assert len(rows) == 1
    return rows[0]


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    assert body["statusCode"] == response.status_code
    return response.status_code, body["error"], body["message"]


# --- the whole flow -----------------------------------------------------------------------------------------


def test_a_device_signs_in_as_the_user_who_approved_it(client: TestClient, sql: Sql) -> None:
    device = start(client, hostname="vps-01", platform="linux-x64")
    assert re.fullmatch(r"[0-9a-f]{64}", device["deviceCode"])
    assert re.fullmatch(r"[A-Z0-9]{5}-[A-Z0-9]{5}", device["userCode"])
    assert device["verificationUri"].endswith("/auth/device")
    assert device["verificationUriComplete"] == f"{device['verificationUri']}?user_code={device['userCode']}"
    assert (device["expiresIn"], device["interval"]) == (900, 5)

    # Anyone may look the code up, and learns only its state.
    anonymous = client.post("/api/auth/device/authorizations/lookup", json={"userCode": device["userCode"]})
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"status", "expiresAt"}
    assert anonymous.json()["status"] == "pending_authorization"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", anonymous.json()["expiresAt"])

    pending = poll(client, device["deviceCode"])
    assert error_of(pending) == (
        428,
        "authorization_pending",
        "Device authorization is still pending approval.",
    )

    user = new_user(client)
    looked = client.post(
        "/api/auth/device/authorizations/lookup",
        json={"userCode": device["userCode"].lower().replace("-", " ")},  # as a person may type it
        headers=bearer(user["accessToken"]),
    )
    assert looked.status_code == 200, looked.text
    assert looked.json()["status"] == "authenticated"
    assert looked.json()["clientContext"] == {
        "deviceName": device["deviceName"],
        "hostname": "vps-01",
        "platform": "linux-x64",
    }

    approved = decide(client, "approve", device["userCode"], user["accessToken"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"

    waited(sql)
    session = poll(client, device["deviceCode"])
    assert session.status_code == 200, session.text
    body = session.json()
    assert set(body) == {"user", "accessToken", "refreshToken"}
    assert body["user"]["id"] == user["user"]["id"]
    current = client.get("/api/auth/sessions/current", headers=bearer(body["accessToken"]))
    assert current.status_code == 200
    assert current.json()["user"]["email"] == user["user"]["email"]

    # A session like any other: its refresh token rotates, and signing out ends it.
    refreshed = client.post(
        "/api/auth/refresh?client_type=desktop", json={"refreshToken": body["refreshToken"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    client.post(
        "/api/auth/logout?client_type=desktop", json={"refreshToken": refreshed.json()["refreshToken"]}
    )
    gone = client.get("/api/auth/sessions/current", headers=bearer(refreshed.json()["accessToken"]))
    assert gone.status_code == 401

    row = row_of(sql, device)
    assert (row["status"], row["bound"]) == ("consumed", user["user"]["id"])
    actions = sql(
        "select action, outcome from system.audit_logs where details->>'deviceAuthorizationId' = %s "
        "order by created_at",
        str(row["id"]),
    )
    assert [(a["action"], a["outcome"]) for a in actions] == [
        ("APPROVE_DEVICE_AUTHORIZATION", "success"),
        ("DEVICE_SIGN_IN", "success"),
    ]


def test_signing_out_everywhere_withdraws_an_approval_not_yet_redeemed(client: TestClient, sql: Sql) -> None:
    """A person who approved a device by mistake and signs out everywhere (or resets their password) ends
    every session: the device must not get a new one afterwards from the approval still waiting."""
    device = start(client)
    user = new_user(client)
    approved = decide(client, "approve", device["userCode"], user["accessToken"])
    assert approved.status_code == 200, approved.text
    signed_out = client.post(
        "/api/auth/logout?client_type=desktop&scope=global", json={"refreshToken": user["refreshToken"]}
    )
    assert signed_out.status_code == 200, signed_out.text
    waited(sql)
    assert error_of(poll(client, device["deviceCode"])) == (
        403,
        "access_denied",
        "Device authorization was denied.",
    )
    assert row_of(sql, device)["status"] == "denied"


def test_codes_are_stored_hashed_only(client: TestClient, sql: Sql) -> None:
    device = start(client)
    stored = sql(
        "select device_code_hash, user_code_hash from auth.device_authorizations "
        "where client_context->>'deviceName' = %s",
        device["deviceName"],
    )[0]
    assert device["deviceCode"] not in stored.values()
    assert device["userCode"] not in stored.values()
    dump = sql("select count(*) as n from system.rate_limits where key like %s", f"%{device['deviceCode']}%")
    assert dump[0]["n"] == 0


# --- refusals on /token -------------------------------------------------------------------------------------


def test_a_denied_code_answers_access_denied(client: TestClient, sql: Sql) -> None:
    device = start(client)
    user = new_user(client)
    denied = decide(client, "deny", device["userCode"], user["accessToken"])
    assert denied.status_code == 200
    assert denied.json()["status"] == "denied"
    assert error_of(poll(client, device["deviceCode"])) == (
        403,
        "access_denied",
        "Device authorization was denied.",
    )
    # Approving it afterwards is refused too.
    assert error_of(decide(client, "approve", device["userCode"], user["accessToken"]))[:2] == (
        403,
        "AUTH_DEVICE_AUTHORIZATION_DENIED",
    )


def test_an_expired_code_answers_expired_token(client: TestClient, sql: Sql) -> None:
    device = start(client)
    user = new_user(client)
    assert decide(client, "approve", device["userCode"], user["accessToken"]).status_code == 200
    sql(
        "update auth.device_authorizations set expires_at = now() - interval '1 second' "
        "where client_context->>'deviceName' = %s",
        device["deviceName"],
    )
    assert error_of(poll(client, device["deviceCode"])) == (
        400,
        "expired_token",
        "Device authorization expired.",
    )
    assert error_of(decide(client, "approve", device["userCode"], user["accessToken"]))[:2] == (
        410,
        "AUTH_DEVICE_AUTHORIZATION_EXPIRED",
    )
    looked = client.post("/api/auth/device/authorizations/lookup", json={"userCode": device["userCode"]})
    assert looked.json()["status"] == "expired"
    assert row_of(sql, device)["status"] == "expired"


def test_a_code_signs_in_once(client: TestClient, sql: Sql) -> None:
    device = start(client)
    user = new_user(client)
    decide(client, "approve", device["userCode"], user["accessToken"])
    assert poll(client, device["deviceCode"]).status_code == 200
    waited(sql)
    again = poll(client, device["deviceCode"])
    assert error_of(again) == (400, "already_used", "Device authorization has already been used.")
    assert error_of(decide(client, "deny", device["userCode"], user["accessToken"]))[:2] == (
        409,
        "AUTH_DEVICE_AUTHORIZATION_CONSUMED",
    )


def test_an_unknown_device_code_answers_invalid_grant(client: TestClient) -> None:
    unknown = poll(client, secrets.token_hex(32))
    assert error_of(unknown) == (400, "invalid_grant", "Device authorization not found.")


def test_two_polls_at_once_get_one_session(client: TestClient, sql: Sql, database_url: str) -> None:
    device = start(client)
    user = new_user(client)
    decide(client, "approve", device["userCode"], user["accessToken"])
    row_id = row_of(sql, device)["id"]
    # Hold the row, so that both polls are waiting on it before either can take it.
    with psycopg.connect(database_url) as holder:
        holder.execute("select 1 from auth.device_authorizations where id = %s for update", (row_id,))
        with ThreadPoolExecutor(2) as pool:
            polls = [pool.submit(poll, client, device["deviceCode"]) for _ in range(2)]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                blocked = sql(
                    "select count(*) as n from pg_stat_activity where wait_event_type = 'Lock' "
                    "and query like '%%auth.device_authorizations%%for update%%'"
                )[0]["n"]
                if blocked == 2:
                    break
                time.sleep(0.02)
            assert blocked == 2
            holder.commit()
            answers = sorted(p.result().status_code for p in polls)
    assert answers == [200, 400]
    sessions = sql(
        "select count(*) as n from auth.sessions where user_id = %s and client_type = 'desktop'",
        user["user"]["id"],
    )
    assert sessions[0]["n"] == 1


def test_polling_faster_than_the_interval_answers_slow_down(client: TestClient, sql: Sql) -> None:
    device = start(client)
    waited(sql)
    assert poll(client, device["deviceCode"]).status_code == 428
    assert poll(client, device["deviceCode"]).status_code == 428
    too_soon = poll(client, device["deviceCode"])
    assert error_of(too_soon) == (400, "slow_down", "Slow down polling this device authorization.")
    # Another device's polls are counted on their own.
    assert poll(client, start(client)["deviceCode"]).status_code == 428


# --- the user-code routes -----------------------------------------------------------------------------------


def test_a_code_bound_to_one_user_cannot_be_taken_by_another(client: TestClient, sql: Sql) -> None:
    device = start(client)
    owner, other = new_user(client), new_user(client)
    looked = client.post(
        "/api/auth/device/authorizations/lookup",
        json={"userCode": device["userCode"]},
        headers=bearer(owner["accessToken"]),
    )
    assert looked.status_code == 200
    bound = ("FORBIDDEN", "Device authorization bound to another user")
    for verb in ("approve", "deny"):
        refused = decide(client, verb, device["userCode"], other["accessToken"])
        assert (refused.status_code, *error_of(refused)[1:]) == (403, *bound)
    peek = client.post(
        "/api/auth/device/authorizations/lookup",
        json={"userCode": device["userCode"]},
        headers=bearer(other["accessToken"]),
    )
    assert (peek.status_code, peek.json()["error"]) == (403, "FORBIDDEN")
    assert "clientContext" not in peek.json()
    # Once approved by its owner, the other user still cannot deny it; the device signs in as the owner.
    assert decide(client, "approve", device["userCode"], owner["accessToken"]).status_code == 200
    assert decide(client, "deny", device["userCode"], other["accessToken"]).status_code == 403
    waited(sql)
    assert poll(client, device["deviceCode"]).json()["user"]["id"] == owner["user"]["id"]
    refusals = sql(
        "select count(*) as n from system.audit_logs where details->>'deviceAuthorizationId' = %s "
        "and outcome = 'refused'",
        str(row_of(sql, device)["id"]),
    )
    assert refusals[0]["n"] == 3


def test_a_wrong_user_code_is_not_found(client: TestClient) -> None:
    user = new_user(client)
    for verb in ("lookup", "approve", "deny"):
        response = decide(client, verb, "ZZZZZ-ZZZZZ", user["accessToken"])
        assert error_of(response) == (404, "NOT_FOUND", "Device authorization not found")


def test_only_a_signed_in_user_approves(client: TestClient, sql: Sql) -> None:
    device = start(client)
    code = {"userCode": device["userCode"]}
    nobody = client.post("/api/auth/device/authorizations/approve", json=code)
    assert error_of(nobody) == (401, "AUTH_INVALID_CREDENTIALS", "No token provided")
    forged = client.post("/api/auth/device/authorizations/approve", json=code, headers=bearer("not.a.jwt"))
    assert error_of(forged)[:2] == (401, "AUTH_UNAUTHORIZED")

    admin = admin_headers(client)
    agent = client.post(
        "/api/agents/keys",
        headers=admin,
        json={"name": f"agent-{secrets.token_hex(3)}", "scopes": ["*:write"]},
    )
    assert agent.status_code == 201, agent.text
    for verb in ("approve", "deny"):
        by_agent = decide(client, verb, device["userCode"], agent.json()["key"])
        assert error_of(by_agent) == (
            403,
            "FORBIDDEN",
            f"Only a signed-in user can {verb} a device authorization.",
        )
    by_api_key = client.post("/api/auth/device/authorizations/approve", json=code, headers=admin)
    assert by_api_key.status_code == 403
    # Nothing changed: the code is still waiting, bound to no one.
    row = row_of(sql, device)
    assert (row["status"], row["bound"]) == ("pending_authorization", None)
    refused = sql(
        "select count(*) as n from system.audit_logs where action = 'APPROVE_DEVICE_AUTHORIZATION' "
        "and outcome = 'refused' and agent_key = %s",
        agent.json()["id"],
    )
    assert refused[0]["n"] == 1


def test_a_signed_in_lookup_with_a_bad_token_is_refused(client: TestClient) -> None:
    device = start(client)
    response = client.post(
        "/api/auth/device/authorizations/lookup",
        json={"userCode": device["userCode"]},
        headers=bearer("not.a.jwt"),
    )
    assert error_of(response)[:2] == (401, "AUTH_UNAUTHORIZED")


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/auth/device/token", {}, "deviceCode: Required, grantType: Required"),
        (
            "/api/auth/device/token",
            {"deviceCode": "abc", "grantType": GRANT},
            "deviceCode: Invalid device code length",
        ),
        (
            "/api/auth/device/token",
            {"deviceCode": "z" * 64, "grantType": GRANT},
            "deviceCode: Invalid device code format",
        ),
        (
            "/api/auth/device/token",
            {"deviceCode": "a" * 64, "grantType": "device_code"},
            f'grantType: Invalid literal value, expected "{GRANT}"',
        ),
        (
            "/api/auth/device/token",
            {"deviceCode": 7, "grantType": GRANT},
            "deviceCode: Expected string, received number",
        ),
        ("/api/auth/device/authorizations/lookup", {}, "userCode: Required"),
        (
            "/api/auth/device/authorizations/lookup",
            {"userCode": "ABCD-EFGH"},
            "userCode: Invalid user code format",
        ),
        (
            "/api/auth/device/authorizations",
            {"deviceName": ""},
            "deviceName: String must contain at least 1 character(s)",
        ),
        (
            "/api/auth/device/authorizations",
            {"hostname": "h" * 256},
            "hostname: String must contain at most 255 character(s)",
        ),
        (
            "/api/auth/device/authorizations",
            {"platform": "a\u0000b"},
            "platform: text cannot contain the NUL character (\\u0000).",
        ),
    ],
)
def test_bad_input_is_a_400_that_changes_nothing(
    client: TestClient, sql: Sql, path: str, body: dict[str, Any], message: str
) -> None:
    before = sql("select count(*) as n from auth.device_authorizations")[0]["n"]
    response = client.post(path, json=body)
    assert error_of(response) == (400, "INVALID_INPUT", message)
    assert sql("select count(*) as n from auth.device_authorizations")[0]["n"] == before


def test_a_body_that_is_not_an_object_is_refused(client: TestClient) -> None:
    response = client.post("/api/auth/device/authorizations", json=["laptop"])
    assert error_of(response) == (400, "INVALID_INPUT", "Expected object, received array")


# --- pruning ------------------------------------------------------------------------------------------------


def test_expired_codes_are_pruned(client: TestClient, sql: Sql) -> None:
    old, fresh = start(client), start(client)
    sql(
        "update auth.device_authorizations set expires_at = now() - interval '2 hours' "
        "where client_context->>'deviceName' = %s",
        old["deviceName"],
    )
    pruned = client.portal.call(services_of(client).auth.devices.prune_expired)  # type: ignore[union-attr]
    assert pruned >= 1
    names = {
        row["name"]
        for row in sql("select client_context->>'deviceName' as name from auth.device_authorizations")
    }
    assert old["deviceName"] not in names
    assert fresh["deviceName"] in names


# --- the verification page ----------------------------------------------------------------------------------


def test_the_verification_page_fills_in_the_code_and_runs_only_its_own_script(client: TestClient) -> None:
    device = start(client)
    link = urlsplit(device["verificationUriComplete"])
    page = client.get(f"{link.path}?{link.query}")
    assert page.status_code == 200
    assert f'value="{device["userCode"]}"' in page.text
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page.text
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # The page holds no secret: no token, no device code.
    assert device["deviceCode"] not in page.text
    assert "Bearer ey" not in page.text


def test_the_verification_page_escapes_what_it_is_given(client: TestClient) -> None:
    page = client.get("/auth/device", params={"user_code": '"><script>alert(1)</script>'})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert 'value=""' in page.text
    assert "not a device code" in page.text


# --- limits -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(settings: Settings) -> Iterator[TestClient]:
    """The same database under low limits, in a client of its own."""
    limits = {"device_authorization_limit": 2, "device_user_code_limit": 3, "device_poll_ip_limit": 4}
    app = create_app(settings.model_copy(update={"auth": auth_settings(**limits)}))
    with TestClient(app, raise_server_exceptions=False, client=("198.51.100.77", 50000)) as test_client:
        yield test_client


def test_starting_is_limited_per_address(tight: TestClient, sql: Sql) -> None:
    sql("delete from system.rate_limits where key like 'device-create:198.51.100.77'")
    assert tight.post("/api/auth/device/authorizations", json={}).status_code == 200
    assert tight.post("/api/auth/device/authorizations", json={}).status_code == 200
    refused = tight.post("/api/auth/device/authorizations", json={})
    status, code, message = error_of(refused)
    assert (status, code) == (429, "TOO_MANY_REQUESTS")
    assert message.startswith("Too many device authorization creation requests from this IP.")


def test_user_codes_cannot_be_guessed_past_the_limit(tight: TestClient, sql: Sql) -> None:
    sql("delete from system.rate_limits where key like 'device-user-code:198.51.100.77'")
    for _ in range(3):
        guess = tight.post("/api/auth/device/authorizations/lookup", json={"userCode": "ZZZZZ-ZZZZZ"})
        assert guess.status_code == 404
    refused = tight.post("/api/auth/device/authorizations/lookup", json={"userCode": "ZZZZZ-ZZZZZ"})
    assert error_of(refused)[:2] == (429, "TOO_MANY_REQUESTS")
    assert refused.json()["message"].startswith(
        "Too many device authorization code submissions from this IP."
    )


def test_polls_are_limited_per_address(tight: TestClient, sql: Sql) -> None:
    sql("delete from system.rate_limits where key like 'device-poll-ip:198.51.100.77'")
    for _ in range(4):
        assert poll(tight, secrets.token_hex(32)).status_code == 400
    assert error_of(poll(tight, secrets.token_hex(32)))[:2] == (429, "TOO_MANY_REQUESTS")
