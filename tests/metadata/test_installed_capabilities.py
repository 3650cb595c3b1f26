"""Metadata once the other capabilities hold something: buckets, functions, realtime channels and their
policies, function logs, the gateway's models, and auth settings that change client code. Buckets, functions
and channels are made through their own APIs."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

#: What the capabilities' APIs cannot set up by themselves: a channel policy, a function's log line, AI and
#: auth settings, an OAuth provider (its secret is not real: the test checks it never shows).
_SQL = """
create policy members_subscribe on realtime.channels for select to authenticated using (true);
insert into functions.logs (slug, level, message, status, duration_ms) values
  ('send-welcome', 'info', 'sent to ada (token=abc123)', 200, 12.5);
create policy members_publish on realtime.messages for insert to authenticated
  with check (realtime.channel_name() like 'room:%');
insert into ai.configurations (model_id, provider) values ('openai/gpt-4o-mini', 'openrouter');
update ai.policy set allowed_models = '{openai/gpt-4o-mini}';
update auth.config set require_email_verification = true, verify_email_method = 'link';
insert into auth.oauth_configs (provider, client_id, client_secret_ciphertext)
  values ('github', 'gh-client', 'not-a-real-ciphertext');
"""
_HELLO = "export default async function (req: Request): Promise<Response> { return new Response('hi'); }"


@pytest.fixture(scope="module")
def installed(database_url: str, client: TestClient, admin: dict[str, str]) -> None:
    """Buckets, functions and a channel made through their own APIs; the rest in SQL."""
    for name, public in (("avatars", True), ("invoices", False)):
        made = client.post(
            "/api/storage/buckets", headers=admin, json={"bucketName": name, "isPublic": public}
        )
        assert made.status_code == 201, made.text
    for slug, name, description, status in (
        ("send-welcome", "Send welcome", "Emails a new user", "active"),
        ("draft-fn", "Draft", None, "draft"),
    ):
        body = {"slug": slug, "name": name, "description": description, "code": _HELLO, "status": status}
        made = client.post("/api/functions", headers=admin, json=body)
        assert made.status_code == 201, made.text
    made = client.post(
        "/api/realtime/channels", headers=admin, json={"pattern": "room:%", "description": "chat rooms"}
    )
    assert made.status_code in (200, 201), made.text
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_SQL.encode())


def test_slices_show_what_is_installed(client: TestClient, admin: dict[str, str], installed: None) -> None:
    storage = client.get("/api/metadata/storage", headers=admin).json()
    assert [(b["name"], b["public"]) for b in storage["buckets"]] == [("avatars", True), ("invoices", False)]
    functions = client.get("/api/metadata/functions", headers=admin).json()
    assert [(f["slug"], f["status"]) for f in functions] == [
        ("draft-fn", "draft"),
        ("send-welcome", "active"),
    ]
    realtime = client.get("/api/metadata/realtime", headers=admin).json()
    assert realtime["channels"] == [
        {"pattern": "room:%", "description": "chat rooms", "enabled": True, "webhookUrls": None}
    ]
    # The policies a developer wrote; Kilnbase's own (its owner's) is not one of them.
    assert [p["policyName"] for p in realtime["permissions"]["subscribe"]["policies"]] == [
        "members_subscribe"
    ]
    assert [p["policyName"] for p in realtime["permissions"]["publish"]["policies"]] == ["members_publish"]
    auth = client.get("/api/metadata/auth", headers=admin).json()
    assert auth["oAuthProviders"] == ["github"] and auth["requireEmailVerification"] is True
    assert "not-a-real-ciphertext" not in str(auth) and "gh-client" not in str(auth)
    ai = client.get("/api/metadata", headers=admin).json()["ai"]
    assert ai["allowedModels"] == ["openai/gpt-4o-mini"]
    assert ai["configurations"][0]["modelId"] == "openai/gpt-4o-mini"


def test_markdown_says_what_changes_client_code(
    client: TestClient, admin: dict[str, str], installed: None
) -> None:
    text = client.get("/api/metadata?format=markdown", headers=admin).text
    assert "email verification: required (link; sign-in fails until verified)" in text
    assert "- OAuth providers: github" in text
    assert "verification emails cannot go out: new users cannot sign in until SMTP is set up" in text
    assert "- buckets: avatars (public), invoices (private)" in text
    assert "- send-welcome (active): Emails a new user" in text
    assert "- channels: room:%: chat rooms" in text
    assert "- subscribe: SELECT to authenticated using (true)\n" in text
    assert "- publish: INSERT to authenticated check (realtime.channel_name() ~~ 'room:%')\n" in text
    assert "- allowed models: openai/gpt-4o-mini" in text
    assert "Not available in this server yet" not in text


def test_function_logs_and_docs_once_installed(
    client: TestClient, admin: dict[str, str], installed: None
) -> None:
    logs = client.get("/api/logs/function.logs?q=ada", headers=admin).json()
    assert logs["total"] == 1
    line = logs["logs"][0]
    assert line["body"]["slug"] == "send-welcome" and line["body"]["status"] == 200
    assert "abc123" not in str(line)
    for doc in ("storage-sdk", "functions-sdk", "real-time"):
        assert "not available" not in client.get(f"/api/docs/{doc}").json()["content"]
