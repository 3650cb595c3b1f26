"""Metadata once the other capabilities are installed: buckets, functions, realtime channels and their
policies, function logs, the gateway's models, and auth settings that change client code. The tables are
made here the way those capabilities make them (the columns this layer reads), on the owner connection."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

_INSTALL = """
create schema if not exists storage;
create table if not exists storage.buckets (name text primary key, public boolean not null default false,
                              created_at timestamptz not null default now());
insert into storage.buckets (name, public) values ('avatars', true), ('invoices', false);
create schema if not exists functions;
create table functions.definitions (slug text primary key, name text not null, description text,
                                    status text not null, created_at timestamptz not null default now(),
                                    updated_at timestamptz not null default now());
insert into functions.definitions (slug, name, description, status) values
  ('send-welcome', 'Send welcome', 'Emails a new user', 'active'), ('draft-fn', 'Draft', null, 'draft');
create table functions.logs (id bigint generated always as identity primary key,
                             created_at timestamptz not null default now(), slug text not null,
                             request_id uuid, level text, message text, status int, duration_ms real);
insert into functions.logs (slug, level, message, status, duration_ms) values
  ('send-welcome', 'info', 'sent to ada (token=abc123)', 200, 12.5);
create schema if not exists realtime;
create table realtime.channels (id uuid primary key default gen_random_uuid(), pattern text not null,
                                description text, enabled boolean not null default true, webhook_urls text[]);
create table realtime.messages (id bigint generated always as identity primary key, channel text);
insert into realtime.channels (pattern, description) values ('room:%', 'chat rooms');
alter table realtime.channels enable row level security;
create policy members_subscribe on realtime.channels for select to authenticated using (true);
insert into ai.configurations (model_id, provider) values ('openai/gpt-4o-mini', 'openrouter');
update ai.policy set allowed_models = '{openai/gpt-4o-mini}';
update auth.config set require_email_verification = true, verify_email_method = 'link';
insert into auth.oauth_configs (provider, client_id, client_secret_ciphertext)
  values ('github', 'gh-client', 'not-a-real-ciphertext');
"""


@pytest.fixture(scope="module")
def installed(database_url: str, client: TestClient) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_INSTALL.encode())


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
    assert [p["policyName"] for p in realtime["permissions"]["subscribe"]["policies"]] == [
        "members_subscribe"
    ]
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
    assert "- subscribe: SELECT to authenticated using (true)" in text
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
    storage_doc = client.get("/api/docs/storage/typescript").json()["content"]
    assert "has the storage capability installed" in storage_doc
    assert "not available" not in client.get("/api/docs/real-time").json()["content"]
