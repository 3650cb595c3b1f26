"""External JWT providers (`/api/auth/jwt-providers`), end to end against a loopback OpenID provider: the
admin's CRUD in InsForge's shapes with every validation failure, agent keys kept to reading, and tokens the
provider signs reading a table under RLS as their user; every way such a token must be refused is a 401
(wrong issuer or audience, expired, unknown key, HS256 or none, provider off or deleted, JWKS unreachable).
Each test configures its own provider: its own issuer, and a JWKS URL of its own, so its key cache is too."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from psycopg import sql
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.auth.jwt_providers import MAX_PROVIDERS
from kilnbase.config import Settings
from tests.auth.conftest import auth_settings, eventually
from tests.support.app import agent_headers, mcp_call, user_headers
from tests.support.oidc_provider import OidcProvider
from tests.support.servers import free_port

PATH = "/api/auth/jwt-providers"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    server = OidcProvider()
    server.start()
    yield server
    server.stop()


def configure(client: TestClient, admin: dict[str, str], idp: OidcProvider, **fields: Any) -> dict[str, Any]:
    """A provider of its own: a fresh issuer and JWKS URL (same keys), enabled."""
    body = {**idp.provider_body(secrets.token_hex(4)), **fields}
    created = client.post(PATH, json=body, headers=admin)
    assert created.status_code == 201, created.text
    provider: dict[str, Any] = created.json()
    return provider


def _segment(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(idp: OidcProvider, provider: dict[str, Any], sub: str = "user_2xAlice", **extra: Any) -> str:
    return idp.sign(idp.claims(sub, f"{sub.lower()}@example.com", iss=provider["issuer"], **extra))


@pytest.fixture(scope="module")
def notes(client: TestClient, database_url: str) -> str:
    """A table under RLS: each row readable by its owner only, the owner being the token's subject."""
    name = f"notes_{secrets.token_hex(3)}"
    with psycopg.connect(database_url) as conn:
        table = sql.Identifier(name)
        conn.execute(sql.SQL("create table {} (id int primary key, owner text, body text)").format(table))
        conn.execute(sql.SQL("alter table {} enable row level security").format(table))
        conn.execute(
            sql.SQL("create policy own on {} for select using (owner = auth.uid_text())").format(table)
        )
        conn.execute(sql.SQL("grant select on {} to anon, authenticated, project_admin").format(table))
        conn.execute(
            sql.SQL(
                "insert into {} values (1, 'user_2xAlice', 'alice note'), (2, 'user_2xBob', 'bob note')"
            ).format(table)
        )
    return name


def read_notes(client: TestClient, table: str, headers: dict[str, str]) -> Any:
    return client.get(f"/api/database/records/{table}?order=id", headers=headers)


# --- CRUD ---------------------------------------------------------------------------------------------------


def test_create_get_list_update_delete(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    provider = configure(client, admin_headers, idp, audience="my-app")
    key = provider["provider_key"]
    assert provider["claim_mappings"] == {"sub": "sub", "email": "email"}
    assert provider["default_role"] == "authenticated"
    assert provider["subject_type"] == "text"
    assert provider["is_enabled"] is True
    assert provider["audience"] == "my-app"
    assert {"id", "created_at", "updated_at", "jwks_url", "issuer", "name"} <= set(provider)

    fetched = client.get(f"{PATH}/{key}", headers=admin_headers)
    assert fetched.status_code == 200 and fetched.json() == provider
    listed = client.get(PATH, headers=admin_headers).json()
    assert key in [p["provider_key"] for p in listed["providers"]]

    changed = client.patch(
        f"{PATH}/{key}",
        json={"is_enabled": False, "audience": None, "subject_type": "uuid"},
        headers=admin_headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_enabled"] is False and changed.json()["audience"] is None
    assert changed.json()["subject_type"] == "uuid" and changed.json()["name"] == provider["name"]

    deleted = client.delete(f"{PATH}/{key}", headers=admin_headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "JWT provider deleted successfully"}
    gone = client.get(f"{PATH}/{key}", headers=admin_headers)
    assert gone.status_code == 404
    assert gone.json()["error"] == "NOT_FOUND" and gone.json()["message"] == "JWT provider not found"

    audits = client.get("/api/logs/audits", params={"limit": 1000}, headers=admin_headers).text
    for action in ("CREATE_JWT_PROVIDER", "UPDATE_JWT_PROVIDER", "DELETE_JWT_PROVIDER"):
        assert action in audits


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"provider_key": "Not Valid"},
            "provider_key must be lowercase alphanumeric with hyphens/underscores",
        ),
        ({"provider_key": "k" * 65}, "provider_key: String must contain at most 64 character(s)"),
        ({"name": ""}, "name: Name is required"),  # (auth's wording for every name)
        ({"name": None}, "name: Expected string, received null"),
        ({"issuer": 7}, "issuer: Expected string, received number"),
        ({"jwks_url": "not a url"}, "jwks_url: Invalid url"),
        ({"jwks_url": "http://idp.example.com/jwks"}, "JWKS URL must use HTTPS"),
        ({"default_role": "service_role"}, "default_role: Invalid enum value"),
        ({"subject_type": "int"}, "subject_type: Invalid enum value"),
        ({"is_enabled": "yes"}, "is_enabled: Expected boolean, received string"),
        ({"claim_mappings": {"sub": "sub"}}, "email: Required"),
        (
            {"claim_mappings": {"sub": "sub", "email": "email", "role": "custom_role"}},
            "role: is set by Kilnbase",
        ),
        ({"claim_mappings": {"sub": "sub", "email": 3}}, "claim_mappings.email: Expected string"),
    ],
)
def test_invalid_bodies_are_refused_and_change_nothing(
    client: TestClient, admin_headers: dict[str, str], change: dict[str, Any], message: str
) -> None:
    key = change.get("provider_key") if isinstance(change.get("provider_key"), str) else None
    body = {
        "name": "Bad",
        "provider_key": "bad-provider",
        "issuer": "https://bad.example.com",
        "jwks_url": "https://bad.example.com/jwks",
        **change,
    }
    refused = client.post(PATH, json=body, headers=admin_headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "INVALID_INPUT"
    assert message in refused.json()["message"]
    assert client.get(f"{PATH}/{key or 'bad-provider'}", headers=admin_headers).status_code == 404


def test_missing_fields_and_bad_updates(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    refused = client.post(PATH, json={}, headers=admin_headers)
    assert refused.status_code == 400
    for field in ("name", "provider_key", "issuer", "jwks_url"):
        assert f"{field}: Required" in refused.json()["message"]
    provider = configure(client, admin_headers, idp)
    key = provider["provider_key"]
    for change, message in (
        ({"jwks_url": "ftp://idp.example.com/jwks"}, "Invalid JWKS URL format"),
        ({"jwks_url": "http://idp.example.com/jwks"}, "JWKS URL must use HTTPS"),
        ({"issuer": None}, "issuer: Expected string, received null"),
        ({"default_role": "root"}, "default_role: Invalid enum value"),
    ):
        answer = client.patch(f"{PATH}/{key}", json=change, headers=admin_headers)
        assert answer.status_code == 400 and message in answer.json()["message"], answer.text
    assert client.get(f"{PATH}/{key}", headers=admin_headers).json() == provider
    unchanged = client.patch(f"{PATH}/{key}", json={}, headers=admin_headers)
    assert unchanged.status_code == 200 and unchanged.json() == provider


def test_duplicate_and_unknown_keys(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    provider = configure(client, admin_headers, idp)
    again = {k: provider[k] for k in ("name", "provider_key", "issuer", "jwks_url")}
    duplicate = client.post(PATH, json=again, headers=admin_headers)
    assert duplicate.status_code == 409 and duplicate.json()["error"] == "ALREADY_EXISTS"
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "patch" else {}
        answer = getattr(client, method)(f"{PATH}/no-such-provider", headers=admin_headers, **kwargs)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["message"] == "JWT provider not found"


def test_only_admins_manage_providers(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    assert client.get(PATH).status_code == 401
    user = user_headers(client, "00000000-0000-4000-8000-000000000001", "someone@example.com")
    assert client.get(PATH, headers=user).status_code == 403
    body = {
        "name": "U",
        "provider_key": "by-user",
        "issuer": "https://u.example",
        "jwks_url": "https://u.example/j",
    }
    assert client.post(PATH, json=body, headers=user).status_code == 403


def test_agent_keys_read_but_never_change(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    provider = configure(client, admin_headers, idp)
    key = provider["provider_key"]
    reader = agent_headers(client, admin_headers, ["auth:read"])
    assert client.get(f"{PATH}/{key}", headers=reader).status_code == 200
    assert key in mcp_call(client, reader, "list-jwt-providers", {})
    writer = agent_headers(client, admin_headers, ["*:write"])
    body = {
        "name": "A",
        "provider_key": "by-agent",
        "issuer": "https://a.example",
        "jwks_url": "https://a.example/j",
    }
    created = client.post(PATH, json=body, headers=writer)
    assert created.status_code == 403, created.text
    assert "Agent keys may not create, change or delete JWT providers" in created.json()["message"]
    assert client.patch(f"{PATH}/{key}", json={"is_enabled": False}, headers=writer).status_code == 403
    assert client.delete(f"{PATH}/{key}", headers=writer).status_code == 403
    assert "may not" in mcp_call(client, writer, "delete-jwt-provider", {"provider_key": key})
    assert client.get(f"{PATH}/{key}", headers=admin_headers).json() == provider
    assert client.get(f"{PATH}/by-agent", headers=admin_headers).status_code == 404
    audits = client.get("/api/logs/audits", params={"limit": 1000}, headers=admin_headers).text
    assert "by-agent" in audits and "refused" in audits


# --- tokens -------------------------------------------------------------------------------------------------


def test_a_provider_token_reads_under_rls_as_its_user(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    provider = configure(
        client,
        admin_headers,
        idp,
        audience="notes-app",
        claim_mappings={"sub": "sub", "email": "email", "org_id": "org.id"},
    )
    token = token_for(idp, provider, aud="notes-app", org={"id": "org_42"})
    answer = read_notes(client, notes, bearer(token))
    assert answer.status_code == 200, answer.text
    assert [row["body"] for row in answer.json()] == ["alice note"]
    again = read_notes(client, notes, bearer(token))  # (from the cache of verified tokens)
    assert [row["body"] for row in again.json()] == ["alice note"]
    bob = token_for(idp, provider, sub="user_2xBob", aud="notes-app")
    assert [row["body"] for row in read_notes(client, notes, bearer(bob)).json()] == ["bob note"]


def test_what_the_database_sees(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, database_url: str
) -> None:
    name = f"whoami_{secrets.token_hex(3)}"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            sql.SQL(
                "create view {} with (security_invoker = true) as select auth.uid_text() as uid_text, "
                "auth.uid() as uid, auth.role() as role, auth.email() as email, "
                "auth.jwt() ->> 'org_id' as org_id, auth.jwt() ->> 'provider' as provider, "
                "current_user as db_role"
            ).format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("grant select on {} to authenticated, anon").format(sql.Identifier(name)))
    provider = configure(
        client, admin_headers, idp, claim_mappings={"sub": "user.id", "email": "user.mail", "org_id": "org"}
    )
    token = idp.sign(
        {
            **idp.claims("ignored", "ignored@example.com", iss=provider["issuer"]),
            "user": {"id": "auth0|abc", "mail": "a@b.co"},
            "org": "org_7",
        }
    )
    answer = client.get(f"/api/database/records/{name}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {
            "uid_text": "auth0|abc",
            "uid": None,
            "role": "authenticated",
            "email": "a@b.co",
            "org_id": "org_7",
            "provider": provider["provider_key"],
            "db_role": "authenticated",
        }
    ]


def test_users_of_two_providers_with_one_subject_keep_their_own_idempotency_keys(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, database_url: str
) -> None:
    """Two providers may each have a user `user_2xShared`: a retry key one of them used must not replay its
    response to the other, whose request runs on its own (and here meets the row the first one wrote)."""
    name = f"drafts_{secrets.token_hex(3)}"
    with psycopg.connect(database_url) as conn:
        table = sql.Identifier(name)
        conn.execute(sql.SQL("create table {} (id int primary key, owner text)").format(table))
        conn.execute(sql.SQL("alter table {} enable row level security").format(table))
        conn.execute(
            sql.SQL("create policy own on {} for insert with check (owner = auth.uid_text())").format(table)
        )
        conn.execute(sql.SQL("grant insert on {} to authenticated").format(table))
    first, second = configure(client, admin_headers, idp), configure(client, admin_headers, idp)
    key = secrets.token_hex(8)
    body = {"id": 1, "owner": "user_2xShared"}

    def insert(provider: dict[str, Any]) -> Any:
        headers = {**bearer(token_for(idp, provider, sub="user_2xShared")), "Idempotency-Key": key}
        return client.post(f"/api/database/records/{name}", json=body, headers=headers)

    assert insert(first).status_code == 201
    retried = insert(first)
    assert (retried.status_code, retried.headers.get("idempotent-replayed")) == (201, "true")
    other = insert(second)
    assert other.status_code == 409, other.text  # it ran: the id is taken
    assert "idempotent-replayed" not in other.headers


def _refusal(client: TestClient, table: str, token: str) -> str:
    """Why the token was refused: InsForge's words ("Invalid token", on which the SDK refreshes), and
    Kilnbase's reason in `nextActions`."""
    answer = read_notes(client, table, bearer(token))
    assert answer.status_code == 401, answer.text
    assert (answer.json()["error"], answer.json()["message"]) == ("AUTH_UNAUTHORIZED", "Invalid token")
    return str(answer.json()["nextActions"])


def test_wrong_issuer_audience_expiry_and_subject(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    provider = configure(client, admin_headers, idp, audience="notes-app")
    assert read_notes(client, notes, bearer(token_for(idp, provider, aud="notes-app"))).status_code == 200
    other_issuer = idp.sign(
        idp.claims("user_2xAlice", "a@example.com", iss="https://elsewhere.example", aud="notes-app")
    )
    _refusal(client, notes, other_issuer)
    assert "audience" in _refusal(client, notes, token_for(idp, provider, aud="another-app"))
    assert "aud" in _refusal(client, notes, token_for(idp, provider))  # (none at all)
    expired = idp.sign(
        idp.claims("user_2xAlice", "a@example.com", lifetime=-60, iss=provider["issuer"], aud="notes-app")
    )
    assert "expired" in _refusal(client, notes, expired)
    no_email = idp.sign(
        {
            k: v
            for k, v in idp.claims("u", "x", iss=provider["issuer"], aud="notes-app").items()
            if k != "email"
        }
    )
    assert "email" in _refusal(client, notes, no_email)
    uuid_only = configure(client, admin_headers, idp, subject_type="uuid")
    assert "UUID" in _refusal(client, notes, token_for(idp, uuid_only))
    user_id = "3f9c1d52-6a57-4c43-9d8e-0f4d1b9b7a10"
    assert read_notes(client, notes, bearer(token_for(idp, uuid_only, sub=user_id))).status_code == 200


def test_unknown_key_is_refused_after_one_refetch(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    provider = configure(client, admin_headers, idp)
    claims = idp.claims("user_2xAlice", "a@example.com", iss=provider["issuer"])
    fetched_before = idp.jwks_requests
    assert "unknown signing key" in _refusal(
        client, notes, idp.sign(claims, kid="not-published", other_key=True)
    )
    assert "unknown signing key" in _refusal(client, notes, idp.sign(claims, kid="also-not-published"))
    assert idp.jwks_requests - fetched_before == 1  # (a made-up kid cannot make Kilnbase hammer the provider)
    # The published kid, signed by another key: a forgery.
    assert "invalid token" in _refusal(client, notes, idp.sign(claims, other_key=True))


@pytest.mark.parametrize("algorithm", ["HS256", "HS512", "none"])
def test_symmetric_and_unsigned_tokens_are_refused(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str, algorithm: str
) -> None:
    provider = configure(client, admin_headers, idp)
    claims = idp.claims("user_2xAlice", "a@example.com", iss=provider["issuer"])
    if algorithm == "none":
        token = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."
    else:
        token = idp.sign(claims, algorithm=algorithm)
    _refusal(client, notes, token)


def test_disabled_and_deleted_providers_are_refused(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    provider = configure(client, admin_headers, idp)
    key = provider["provider_key"]
    token = token_for(idp, provider)
    assert read_notes(client, notes, bearer(token)).status_code == 200  # (now cached as verified)
    client.patch(f"{PATH}/{key}", json={"is_enabled": False}, headers=admin_headers)
    _refusal(client, notes, token)
    client.patch(f"{PATH}/{key}", json={"is_enabled": True}, headers=admin_headers)
    assert read_notes(client, notes, bearer(token)).status_code == 200
    client.delete(f"{PATH}/{key}", headers=admin_headers)
    _refusal(client, notes, token)


def test_unreachable_jwks_is_a_401(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    nowhere = configure(client, admin_headers, idp, jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    started = time.monotonic()
    assert "could not be fetched" in _refusal(client, notes, token_for(idp, nowhere))
    assert "could not be fetched" in _refusal(client, notes, token_for(idp, nowhere))  # (in its cooldown)
    assert time.monotonic() - started < 10
    idp.jwks_down = True
    try:
        down = configure(client, admin_headers, idp)
        _refusal(client, notes, token_for(idp, down))
    finally:
        idp.jwks_down = False


def test_project_admin_tokens_are_never_api_admins(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    provider = configure(client, admin_headers, idp, default_role="project_admin")
    token = bearer(token_for(idp, provider))
    assert client.get(PATH, headers=token).status_code == 403
    assert client.get("/api/auth/users", headers=token).status_code == 403
    assert read_notes(client, notes, token).status_code == 200
    audits = client.get("/api/logs/audits", params={"limit": 1000}, headers=admin_headers).json()
    entries = audits if isinstance(audits, list) else audits.get("data", audits.get("logs", []))
    created = [
        e
        for e in entries
        if e["action"] == "CREATE_JWT_PROVIDER"
        and e["details"].get("provider_key") == provider["provider_key"]
    ]
    assert created and created[0]["details"]["grantsProjectAdmin"] is True


def test_signed_in_user_endpoints_refuse_external_tokens_cleanly(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    provider = configure(client, admin_headers, idp)
    answer = client.get("/api/auth/sessions/current", headers=bearer(token_for(idp, provider)))
    assert answer.status_code == 401 and answer.json()["message"] == "User not authenticated"


def test_another_process_sees_changes_promptly(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str, settings: Settings
) -> None:
    """A second app on the same database (as a second server process) learns of a provider, and of its
    deletion, from the table's notification, not from its own calls."""
    with TestClient(create_app(settings.model_copy(update={"auth": auth_settings()}))) as other:
        provider = configure(client, admin_headers, idp)
        token = bearer(token_for(idp, provider))
        eventually(lambda: read_notes(other, notes, token).status_code == 200)
        client.delete(f"{PATH}/{provider['provider_key']}", headers=admin_headers)
        eventually(lambda: read_notes(other, notes, token).status_code == 401)


@pytest.mark.parametrize("algorithm", [["RS256"], {"alg": "RS256"}, 256, None])
def test_a_header_whose_algorithm_is_not_text_is_a_401(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str, algorithm: Any
) -> None:
    """A token naming a provider's issuer with an `alg` that is a list, an object, a number or null: a
    refusal like any other, not a 500."""
    provider = configure(client, admin_headers, idp)
    claims = idp.claims("user_2xAlice", "a@example.com", iss=provider["issuer"])
    token = f"{_segment({'alg': algorithm, 'typ': 'JWT'})}.{_segment(claims)}.c2lnbmF0dXJl"
    assert "algorithm" in _refusal(client, notes, token)


def test_an_external_caller_is_named_by_provider_and_subject_not_by_its_email(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, database_url: str
) -> None:
    """A provider's `email` is whatever its token says (an IdP may let users choose it, unverified): a token
    whose email is `api-key` must not be logged as the API key. The audit names it by provider and subject."""
    provider = configure(client, admin_headers, idp)
    sub = f"user_{secrets.token_hex(4)}"
    token = idp.sign(idp.claims(sub, "api-key", iss=provider["issuer"]))
    agent = f"spoof-test-{secrets.token_hex(4)}"
    refused = client.post(
        "/api/auth/device/authorizations/approve",
        json={"userCode": "ABCDE-FGHJK"},
        headers={**bearer(token), "User-Agent": agent},
    )
    assert refused.status_code == 403, refused.text
    with psycopg.connect(database_url) as conn:
        actors = [
            row[0]
            for row in conn.execute("select actor from system.audit_logs where user_agent = %s", (agent,))
        ]
    assert actors == [f"jwt:{provider['provider_key']}:{sub}"]


def test_an_empty_audience_checks_no_audience(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    """InsForge takes `audience: ""` (what a form with the field left blank sends) and checks no audience
    then, as for null; the provider is answered as stored."""
    provider = configure(client, admin_headers, idp, audience="")
    assert provider["audience"] == ""
    assert read_notes(client, notes, bearer(token_for(idp, provider))).status_code == 200
    assert read_notes(client, notes, bearer(token_for(idp, provider, aud="any-app"))).status_code == 200


@pytest.mark.parametrize("url", ["https://idp.example.com:abc/jwks", "https://[::1]x/jwks"])
def test_a_jwks_url_no_client_can_fetch_is_refused(
    client: TestClient, admin_headers: dict[str, str], url: str
) -> None:
    """A URL whose port is not a number parses as a URL but can never be fetched: refused, nothing stored."""
    key = f"bad-url-{secrets.token_hex(3)}"
    body = {"name": "x", "provider_key": key, "issuer": f"https://{key}.example", "jwks_url": url}
    refused = client.post(PATH, json=body, headers=admin_headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "Invalid JWKS URL format"
    assert client.get(f"{PATH}/{key}", headers=admin_headers).status_code == 404


def test_a_stored_jwks_url_no_client_can_fetch_is_a_401(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str, database_url: str
) -> None:
    """A provider written by SQL with such a URL: its tokens are refused as a JWKS that cannot be fetched,
    never a 500."""
    provider = configure(client, admin_headers, idp)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update auth.jwt_providers set jwks_url = 'https://idp.example.com:abc/jwks' "
            "where provider_key = %s",
            (provider["provider_key"],),
        )
    token = token_for(idp, provider)
    answers: list[Any] = []

    def refused() -> bool:
        answers.append(read_notes(client, notes, bearer(token)))
        return bool(answers[-1].status_code != 200)

    # Until this process has heard of the change, the old URL serves; then the new one must be fetched.
    eventually(refused)
    answers += [read_notes(client, notes, bearer(token)) for _ in range(2)]
    failed = [(a.status_code, a.json()["nextActions"]) for a in answers if a.status_code != 200]
    assert all(code == 401 and "could not be fetched" in message for code, message in failed), failed


def test_malformed_entries_of_a_jwks_are_skipped(
    client: TestClient, admin_headers: dict[str, str], notes: str
) -> None:
    """A provider's JWKS with entries that are not keys (an `alg` that is a list, a bare string): they are
    skipped and its real key still verifies, rather than every request being a 500."""
    odd = OidcProvider(jwks_extra=[{"kty": "RSA", "alg": ["RS256"], "kid": "odd"}, "not-a-key", {"kty": 7}])
    odd.start()
    try:
        provider = configure(client, admin_headers, odd)
        assert read_notes(client, notes, bearer(token_for(odd, provider))).status_code == 200
    finally:
        odd.stop()


# --- clock skew, tokens without a kid, credentials in JWKS URLs, the provider limit -------------------------


def test_a_clock_a_little_off_is_within_the_leeway(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider, notes: str
) -> None:
    """A provider's clock a few seconds off ours (`exp` just past, `iat` and `nbf` just ahead) is accepted,
    as OIDC libraries accept it; past the leeway (30 s by default) the token is refused."""
    provider = configure(client, admin_headers, idp)
    now = int(time.time())
    just_expired = token_for(idp, provider, exp=now - 10)
    assert read_notes(client, notes, bearer(just_expired)).json() == [
        {"id": 1, "owner": "user_2xAlice", "body": "alice note"}
    ]
    ahead = token_for(idp, provider, iat=now + 15, nbf=now + 15)
    assert read_notes(client, notes, bearer(ahead)).status_code == 200
    assert "expired" in _refusal(client, notes, token_for(idp, provider, exp=now - 120))
    assert "not yet valid" in _refusal(client, notes, token_for(idp, provider, nbf=now + 120))
    assert "not yet valid" in _refusal(client, notes, token_for(idp, provider, iat=now + 120))


def test_a_token_without_a_kid_is_tried_against_the_keys_that_fit(
    client: TestClient, admin_headers: dict[str, str], notes: str
) -> None:
    """An RS256 token naming no key (as a provider publishing one key without a kid issues): tried against
    the provider's keys of its type (here an EC key and another RSA key come first), not refused because
    the project's own RSA key does not verify it; a forged one, HS256 and none still are refused."""
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    extra = [RSAAlgorithm.to_jwk(other_rsa, as_dict=True), ECAlgorithm.to_jwk(ec_key, as_dict=True)]
    bare = OidcProvider(jwks_without_kid=True, jwks_extra=extra)
    bare.start()
    try:
        provider = configure(client, admin_headers, bare)
        claims = bare.claims("user_2xAlice", "a@example.com", iss=provider["issuer"])
        answer = read_notes(client, notes, bearer(bare.sign(claims, kid=None)))
        assert answer.status_code == 200, answer.text
        assert [row["id"] for row in answer.json()] == [1]
        assert "invalid token" in _refusal(client, notes, bare.sign(claims, kid=None, other_key=True))
        _refusal(client, notes, bare.sign(claims, kid=None, algorithm="HS256"))
        unsigned = f"{_segment({'alg': 'none'})}.{_segment(claims)}."
        _refusal(client, notes, unsigned)
    finally:
        bare.stop()


def test_a_jwks_url_credential_reaches_neither_the_log_nor_the_audit(
    client: TestClient,
    admin_headers: dict[str, str],
    idp: OidcProvider,
    notes: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A JWKS URL holding a password and a token in its query (a provider behind a gateway): when its keys
    cannot be fetched the warning names the URL with both hidden, and the audit entry of its creation too."""
    url = f"http://jwks-user:pw-s3cr3t@127.0.0.1:{free_port()}/jwks?token=tk-s3cr3t&tenant=acme"
    with caplog.at_level("WARNING", logger="kilnbase.external_tokens"):
        provider = configure(client, admin_headers, idp, jwks_url=url)
        assert "could not be fetched" in _refusal(client, notes, token_for(idp, provider))
    logged = [r.getMessage() for r in caplog.records if "could not be fetched" in r.getMessage()]
    assert logged and all("s3cr3t" not in line and "jwks-user" not in line for line in logged), logged
    assert "http://***@127.0.0.1:" in logged[0] and "/jwks?token=***&tenant=***" in logged[0]
    with psycopg.connect(database_url) as conn:
        details = [
            row[0]
            for row in conn.execute(
                "select details from system.audit_logs where action = 'CREATE_JWT_PROVIDER' "
                "and details ->> 'provider_key' = %s",
                (provider["provider_key"],),
            )
        ]
    assert len(details) == 1 and "s3cr3t" not in json.dumps(details)
    assert details[0]["jwks_url"].endswith("/jwks?token=***&tenant=***")
    # The admin who configured it still reads it back as it was written.
    assert client.get(f"{PATH}/{provider['provider_key']}", headers=admin_headers).json()["jwks_url"] == url


def test_concurrent_creates_cannot_pass_the_provider_limit(
    client: TestClient, admin_headers: dict[str, str], database_url: str
) -> None:
    """With one place left, a create that counts while another's insert is not yet committed waits for it,
    then finds the limit reached (409), rather than both making it and the project holding one too many."""
    tag = f"fill-{secrets.token_hex(3)}"
    insert = (
        "insert into auth.jwt_providers (name, provider_key, issuer, jwks_url) "
        "select 'filler', %s || '-' || n, 'https://' || %s || n || '.example', 'https://idp.example/jwks' "
        "from generate_series(1, %s) n"
    )
    body = {
        "name": "late",
        "provider_key": f"{tag}-late",
        "issuer": "https://late.example",
        "jwks_url": "https://late.example/jwks",
    }
    answers: list[Any] = []
    with psycopg.connect(database_url, autocommit=True) as setup, psycopg.connect(database_url) as racer:
        try:
            (held,) = setup.execute("select count(*) from auth.jwt_providers").fetchone() or (0,)
            setup.execute(insert, (tag, tag, MAX_PROVIDERS - 1 - held))
            racer.execute(insert, (f"{tag}-racer", tag, 1))  # (the last place, not committed yet)
            worker = threading.Thread(
                target=lambda: answers.append(client.post(PATH, json=body, headers=admin_headers))
            )
            worker.start()

            def create_waits() -> bool:
                waiting = setup.execute(
                    "select count(*) from pg_catalog.pg_locks "
                    "where not granted and relation = 'auth.jwt_providers'::regclass"
                ).fetchone()
                return bool(answers) or bool(waiting and waiting[0])

            assert eventually(create_waits)
            racer.commit()
            worker.join(timeout=30)
            assert answers and answers[0].status_code == 409, answers[0].text if answers else "no answer"
            assert answers[0].json()["error"] == "TOO_MANY_JWT_PROVIDERS"
            (total,) = setup.execute("select count(*) from auth.jwt_providers").fetchone() or (0,)
            assert total == MAX_PROVIDERS
        finally:
            racer.rollback()
            setup.execute("delete from auth.jwt_providers where provider_key like %s", (f"{tag}-%",))


def test_agent_keys_read_a_jwks_url_without_its_credential(
    client: TestClient, admin_headers: dict[str, str], idp: OidcProvider
) -> None:
    """An agent key with auth:read lists and reads providers, but a credential the admin put in a JWKS URL
    (userinfo, a token in the query) is shown to it as `***`; the admin still reads the URL as written."""
    url = f"{idp.issuer}/jwks?access_token=agent-must-not-see"
    url = url.replace("http://", "http://svc:pw-agent-must-not-see@")
    provider = configure(client, admin_headers, idp, jwks_url=url)
    key = provider["provider_key"]
    reader = agent_headers(client, admin_headers, ["auth:read"])
    read = client.get(f"{PATH}/{key}", headers=reader).json()
    assert read["jwks_url"] == f"http://***@127.0.0.1:{idp.port}/jwks?access_token=***"
    listed = client.get(PATH, headers=reader).json()["providers"]
    assert [p["jwks_url"] for p in listed if p["provider_key"] == key] == [read["jwks_url"]]
    assert "agent-must-not-see" not in mcp_call(client, reader, "list-jwt-providers", {})
    assert "agent-must-not-see" not in mcp_call(client, reader, "get-jwt-provider", {"provider_key": key})
    assert client.get(f"{PATH}/{key}", headers=admin_headers).json()["jwks_url"] == url
