"""`/api/config`: the live config as the individual APIs left it, and applying a file: its plan, the changes
made through auth's and storage's own services (audited as theirs), dry runs, pruning, all or nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg
from starlette.testclient import TestClient

from tests.config.conftest import BUCKETS, apply, bucket_names, live, new_bucket, put_object
from tests.support.app import anon_headers, user_headers


def audit_entries(database_url: str, since: datetime) -> list[tuple[str, str]]:
    """The audit log's (action, outcome) pairs written after `since`, sorted (those of one transaction share
    their time)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select action, outcome from system.audit_logs where created_at > %s", (since,)
        ).fetchall()
    return sorted((row[0], row[1]) for row in rows)


def audit_actions(database_url: str, since: datetime) -> list[str]:
    return [action for action, _ in audit_entries(database_url, since)]


def database_now(database_url: str) -> datetime:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def test_get_reflects_the_individual_apis(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    bucket = name("media")
    new_bucket(client, admin, bucket, public=True)
    urls = ["https://app.example.com/welcome", "myapp://callback"]
    changed = client.put(
        "/api/auth/config", headers=admin, json={"disableSignup": True, "allowedRedirectUrls": urls}
    )
    assert changed.status_code == 200, changed.text

    config = live(client, admin)
    assert config["auth"] == {"jwt_expiry": 900, "enable_signup": False, "additional_redirect_urls": urls}
    assert config["storage"]["buckets"][bucket] == {"public": True}

    assert client.patch(f"{BUCKETS}/{bucket}", headers=admin, json={"isPublic": False}).status_code == 200
    client.put("/api/auth/config", headers=admin, json={"disableSignup": False})
    config = live(client, admin)
    assert config["auth"]["enable_signup"] is True
    assert config["storage"]["buckets"][bucket] == {"public": False}


def test_apply_changes_auth_and_buckets_through_their_services(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], database_url: str
) -> None:
    existing, added = name("existing"), name("added")
    new_bucket(client, admin, existing, public=False)
    client.put("/api/auth/config", headers=admin, json={"disableSignup": False, "allowedRedirectUrls": []})
    since = database_now(database_url)
    file = {
        "project_id": "my-project",
        "auth": {"enable_signup": False, "additional_redirect_urls": ["https://*.example.com"]},
        "storage": {"buckets": {existing: {"public": True}, added: {"public": True}}},
    }
    answer = apply(client, admin, file)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["applied"] is True
    changes = body["plan"]["changes"]
    assert {"section": "auth", "op": "modify", "key": "enable_signup", "from": True, "to": False} in changes
    assert {
        "section": "auth",
        "op": "modify",
        "key": "additional_redirect_urls",
        "from": [],
        "to": ["https://*.example.com"],
    } in changes
    assert {
        "section": "storage.buckets",
        "op": "modify",
        "key": existing,
        "field": "public",
        "from": False,
        "to": True,
    } in changes
    assert {"section": "storage.buckets", "op": "add", "key": added, "value": {"public": True}} in changes
    assert body["plan"]["summary"]["add"] == 1 and body["plan"]["summary"]["modify"] == 3

    auth = client.get("/api/auth/config", headers=admin).json()
    assert auth["disableSignup"] is True and auth["allowedRedirectUrls"] == ["https://*.example.com"]
    buckets = {b["name"]: b["public"] for b in client.get(BUCKETS, headers=admin).json()}
    assert buckets[existing] is True and buckets[added] is True
    actions = audit_actions(database_url, since)
    assert actions == sorted(["UPDATE_AUTH_CONFIG", "UPDATE_BUCKET", "CREATE_BUCKET", "APPLY_CONFIG"])

    # Applied again: converged, nothing to do, nothing recorded.
    again = apply(client, admin, file).json()
    assert again["applied"] is False
    assert [c for c in again["plan"]["changes"] if c["section"] == "auth"] == []
    assert all(c["op"] == "remove" for c in again["plan"]["changes"])  # (other tests' buckets, kept)
    assert audit_actions(database_url, since) == actions

    # A new user cannot sign up now, as with PUT /api/auth/config.
    refused = client.post("/api/auth/users", json={"email": "late@example.com", "password": "password-123"})
    assert refused.status_code == 403, refused.text


def test_a_new_bucket_without_public_is_private(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    bucket = name("private")
    body = apply(client, admin, {"storage": {"buckets": {bucket: {}}}}).json()
    assert {"section": "storage.buckets", "op": "add", "key": bucket, "value": {}} in body["plan"]["changes"]
    assert live(client, admin)["storage"]["buckets"][bucket] == {"public": False}


def test_dry_run_answers_the_plan_and_changes_nothing(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], database_url: str
) -> None:
    bucket = name("planned")
    before = live(client, admin)
    since = database_now(database_url)
    file = {
        "auth": {"enable_signup": not before["auth"]["enable_signup"]},
        "storage": {"buckets": {bucket: {}}},
    }
    answer = apply(client, admin, file, dry_run=True)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["applied"] is False
    assert {"section": "storage.buckets", "op": "add", "key": bucket, "value": {}} in body["plan"]["changes"]
    assert body["plan"]["changes"][0]["key"] == "enable_signup"
    assert live(client, admin) == before
    assert audit_actions(database_url, since) == []


def test_buckets_left_out_are_kept_unless_pruned(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    kept, gone = name("kept"), name("gone")
    new_bucket(client, admin, kept)
    new_bucket(client, admin, gone)
    others = {b: v for b, v in live(client, admin)["storage"]["buckets"].items() if b not in (kept, gone)}
    file = {"storage": {"buckets": {**others, kept: {}}}}

    plain = apply(client, admin, file).json()
    removal = {"section": "storage.buckets", "op": "remove", "key": gone}
    assert plain["plan"]["changes"] == [{**removal, "kept": True}]
    assert plain["plan"]["summary"] == {"add": 0, "modify": 0, "remove": 0, "kept": 1}
    assert plain["applied"] is False
    assert gone in bucket_names(client, admin)

    pruned = apply(client, admin, file, prune=True).json()
    assert pruned["plan"]["changes"] == [{**removal, "kept": False}]
    assert pruned["applied"] is True
    names = bucket_names(client, admin)
    assert gone not in names and kept in names


def test_a_file_without_buckets_prunes_none(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str]
) -> None:
    bucket = name("unmanaged")
    new_bucket(client, admin, bucket)
    body = apply(client, admin, {"auth": {}}, prune=True).json()
    assert body["plan"]["changes"] == []
    assert bucket in bucket_names(client, admin)


def test_pruning_a_bucket_with_objects_refuses_the_whole_apply(
    client: TestClient, admin: dict[str, str], name: Callable[[str], str], database_url: str
) -> None:
    """It fails midway (after the auth change and the new bucket were made in its transaction): nothing of
    it stays, and the refusal is in the audit log."""
    full, added = name("full"), name("added")
    new_bucket(client, admin, full)
    put_object(client, admin, full, "keep/me.txt")
    before = live(client, admin)
    others = {b: v for b, v in before["storage"]["buckets"].items() if b != full}
    file = {
        "auth": {"enable_signup": not before["auth"]["enable_signup"]},
        "storage": {"buckets": {**others, added: {"public": True}}},
    }
    since = database_now(database_url)
    for dry_run in (True, False):
        refused = apply(client, admin, file, prune=True, dry_run=dry_run)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "STORAGE_BUCKET_NOT_EMPTY"
        assert f'Bucket "{full}" holds 1 object(s)' in refused.json()["message"]
        assert live(client, admin) == before
    assert audit_entries(database_url, since) == [("APPLY_CONFIG", "refused"), ("APPLY_CONFIG", "refused")]
    assert client.get(f"{BUCKETS}/{full}/objects/keep/me.txt", headers=admin).status_code == 200


def test_only_admins(client: TestClient) -> None:
    user = user_headers(client, "0b3a4a9e-5c1d-4f0e-8a52-1f6f3c2a9d01", "user@example.com")
    for headers, status in ((user, 403), (anon_headers(client), 401)):
        assert client.get("/api/config", headers=headers).status_code == status
        assert apply(client, headers, {}).status_code == status
    assert client.get("/api/config").status_code == 401
    assert client.post("/api/config/apply", json={"config": {}}).status_code == 401
