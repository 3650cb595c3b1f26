"""`/api/memory` over the real database and the scripted upstream: remember and recall by meaning, scopes
apart, near-duplicates reconciled as the model answers (and safely when it answers nonsense), transcripts
extracted, the index, every limit a 400 that calls no model, API and agent keys only, agent scopes, the
usage ledger, and an upstream failure that stores nothing."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.support.app import admin_headers, agent_headers, anon_headers, mcp_call, services_of, user_headers
from tests.support.fake_openrouter import Fail, FakeOpenRouter, Reply
from tests.support.side_sql import Sql, wait_for

CHAT = "openai/gpt-4o-mini"
EMBED = "openai/text-embedding-3-small"
STRIPE = {
    "title": "Stripe webhook secret",
    "content": "The staging Stripe webhook signing secret is kept in the vault acme-infra.",
}


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return admin_headers(client)


def remember(client: TestClient, headers: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    answer = client.post("/api/memory/remember", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def recall(client: TestClient, headers: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    answer = client.post("/api/memory/recall", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    memories: list[dict[str, Any]] = answer.json()["memories"]
    return memories


def index(client: TestClient, headers: dict[str, str], scope: str) -> list[dict[str, Any]]:
    answer = client.post("/api/memory/index", json={"scope": scope}, headers=headers)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def test_remembered_then_recalled_by_meaning_and_not_by_an_unrelated_query(
    client: TestClient, admin: dict[str, str], scope: str
) -> None:
    [added] = remember(client, admin, scope=scope, kind="reference", source="task-42", **STRIPE)
    assert (
        added["action"] == "ADD"
        and added["title"] == STRIPE["title"]
        and set(added) == {"action", "id", "title"}
    )

    [found] = recall(client, admin, scope=scope, query="where is the stripe webhook signing secret kept")
    assert set(found) == {"id", "kind", "title", "content", "similarity", "updated_at"}
    assert (
        found["id"] == added["id"] and found["kind"] == "reference" and found["content"] == STRIPE["content"]
    )
    assert 0.45 < found["similarity"] <= 1.0
    assert found["updated_at"].endswith("Z")

    assert recall(client, admin, scope=scope, query="favourite colour of the office cat") == []
    # A threshold of 1 leaves out what meaning alone found; a caller may lower the default instead.
    assert recall(client, admin, scope=scope, query="stripe signing secret vault", threshold=1) != []
    assert (
        recall(client, admin, scope=scope, query="which signing vault for production", threshold=0.99) == []
    )


def test_scopes_keep_memories_apart(client: TestClient, admin: dict[str, str], scope: str) -> None:
    other = scope + "-other"
    remember(client, admin, scope=scope, **STRIPE)
    assert recall(client, admin, scope=other, query="stripe webhook signing secret") == []
    assert index(client, admin, other) == []
    [mine] = index(client, admin, scope)
    assert mine["title"] == STRIPE["title"]
    # The same memory in another scope is new there: nothing to reconcile with, no model asked.
    assert remember(client, admin, scope=other, **STRIPE)[0]["action"] == "ADD"


def test_a_near_duplicate_is_skipped_when_the_model_says_noop(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter
) -> None:
    [first] = remember(client, admin, scope=scope, **STRIPE)
    fake.script_model(CHAT, Reply(content='{"action": "NOOP"}'))
    again = {"title": "Stripe webhook secret location", "content": STRIPE["content"] + " (staging)"}
    assert remember(client, admin, scope=scope, **again) == [{"action": "NOOP", "title": again["title"]}]
    assert [e["id"] for e in index(client, admin, scope)] == [first["id"]]
    # The model was shown the candidate and the existing memory, by id.
    [asked] = fake.chat_calls()
    shown = orjson.loads(asked["body"]["messages"][-1]["content"])
    assert shown["candidate"]["title"] == again["title"]
    assert [m["id"] for m in shown["existing"]] == [first["id"]]
    assert asked["body"]["model"] == CHAT and asked["body"]["temperature"] == 0


def test_a_near_duplicate_updates_the_memory_the_model_names(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter
) -> None:
    [first] = remember(client, admin, scope=scope, **STRIPE)
    merged = "The staging Stripe webhook signing secret moved to the vault acme-platform in May."
    decision = {"action": "UPDATE", "target_id": first["id"], "title": "Stripe webhook secret (moved)"}
    fake.script_model(
        CHAT,
        Reply(content="Sure!\n```json\n" + orjson.dumps({**decision, "content": merged}).decode() + "\n```"),
    )
    [updated] = remember(client, admin, scope=scope, kind="decision", **{**STRIPE, "content": merged})
    assert updated == {"action": "UPDATE", "id": first["id"], "title": "Stripe webhook secret (moved)"}
    [entry] = index(client, admin, scope)
    assert entry["id"] == first["id"] and entry["kind"] == "decision"
    [found] = recall(client, admin, scope=scope, query="stripe webhook signing secret acme-platform vault")
    assert found["content"] == merged and found["title"] == "Stripe webhook secret (moved)"


@pytest.mark.parametrize(
    "answer",
    [
        "I think this one is new.",
        '{"action": "UPDATE", "target_id": "00000000-0000-4000-8000-000000000000", "content": "x"}',
        '{"action": "DELETE"}',
        '{"action": ',
        '["NOOP"]',
    ],
    ids=["prose", "made-up-target", "unknown-action", "broken-json", "not-an-object"],
)
def test_a_reconciliation_that_cannot_be_used_adds_the_memory(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter, answer: str
) -> None:
    [first] = remember(client, admin, scope=scope, **STRIPE)
    fake.script_model(CHAT, Reply(content=answer))
    [second] = remember(client, admin, scope=scope, **{**STRIPE, "title": "Stripe secret, again"})
    assert second["action"] == "ADD" and second["id"] != first["id"]
    assert len(fake.chat_calls()) == 1
    assert {e["id"] for e in index(client, admin, scope)} == {first["id"], second["id"]}


def test_a_transcript_becomes_memories(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter
) -> None:
    extracted = {
        "memories": [
            {
                "kind": "decision",
                "title": "tags as text[]",
                "content": "snippets.tags is a text[] column with a GIN index.",
            },
            {
                "kind": "gossip",
                "title": "insert format",
                "content": "SDK inserts must be wrapped in an array.",
            },
            {"title": "no content"},
            "not an object",
            {"kind": "fact", "title": "  ", "content": "a memory without a title is dropped"},
        ]
    }
    fake.script_model(CHAT, Reply(content="Here you go:\n" + orjson.dumps(extracted).decode()))
    transcript = "user: store tags\nassistant: used text[] with a GIN index ...\n" * 20
    results = remember(client, admin, scope=scope, transcript=transcript, source="session-7")
    assert [(r["action"], r["title"]) for r in results] == [
        ("ADD", "tags as text[]"),
        ("ADD", "insert format"),
    ]
    [asked] = fake.chat_calls()
    assert asked["body"]["messages"][0]["role"] == "system"
    assert asked["body"]["messages"][1] == {"role": "user", "content": transcript}
    kinds = {e["title"]: e["kind"] for e in index(client, admin, scope)}
    assert kinds == {"tags as text[]": "decision", "insert format": "fact"}  # (an unknown kind is a fact)

    fake.script_model(CHAT, Reply(content="Nothing worth keeping."))
    assert remember(client, admin, scope=scope, transcript="user: hi\nassistant: hello") == []


def test_the_index_lists_titles_newest_first(client: TestClient, admin: dict[str, str], scope: str) -> None:
    titles = ["alpha deploys via actions", "bravo database lives in frankfurt", "charlie prefers tabs"]
    for title in titles:
        remember(client, admin, scope=scope, title=title, content=f"{title}, as decided in planning.")
    entries = index(client, admin, scope)
    assert [e["title"] for e in entries] == titles[::-1]
    assert all(set(e) == {"id", "kind", "title", "updated_at"} for e in entries)
    # No body at all: the default scope (whatever it holds by now), never an error.
    assert client.post("/api/memory/index", headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("remember", {"scope": "s"}, "Provide either { transcript } or { title, content }"),
        ("remember", {"title": "only a title"}, "Provide either"),
        ("remember", {"title": "t", "content": ""}, "content"),
        ("remember", {"title": "t", "content": "c", "kind": "opinion"}, "kind"),
        ("remember", {"title": "t" * 2001, "content": "c"}, "title"),
        ("remember", {"title": "t", "content": "c" * 20_001}, "content"),
        ("remember", {"transcript": "x" * 50_001}, "transcript"),
        ("remember", {"title": "t", "content": "c", "scope": ""}, "scope"),
        ("remember", {"title": "t", "content": "c", "scope": "s" * 256}, "scope"),
        ("remember", {"title": "t", "content": "c", "tilte": "typo"}, "tilte"),
        ("remember", {"title": 5, "content": "c"}, "title"),
        ("recall", {"scope": "s"}, "query"),
        ("recall", {"query": "q" * 4001}, "query"),
        ("recall", {"query": "q", "limit": 0}, "limit"),
        ("recall", {"query": "q", "limit": 51}, "limit"),
        ("recall", {"query": "q", "limit": "5"}, "limit"),
        ("recall", {"query": "q", "threshold": 1.5}, "threshold"),
        ("recall", {"query": "q", "treshold": 0.5}, "treshold"),
        ("index", {"scope": 7}, "scope"),
        ("index", [1, 2], "JSON object"),
    ],
)
def test_bad_input_is_a_400_that_calls_no_model(
    client: TestClient, admin: dict[str, str], fake: FakeOpenRouter, path: str, body: Any, names: str
) -> None:
    answer = client.post(f"/api/memory/{path}", json=body, headers=admin)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error"] == "INVALID_INPUT" and names in error["message"]
    assert error["message"].startswith("Validation error: ") or path == "index"
    assert fake.calls == []


def test_malformed_json_is_a_400(client: TestClient, admin: dict[str, str]) -> None:
    answer = client.post(
        "/api/memory/recall", content=b'{"query": ', headers={**admin, "content-type": "application/json"}
    )
    assert answer.status_code == 400 and answer.json()["error"] == "INVALID_INPUT"


def test_only_an_api_key_or_an_agent_key_reaches_memory(
    client: TestClient, admin: dict[str, str], sql: Sql, fake: FakeOpenRouter
) -> None:
    tokens = services_of(client).core.tokens
    admin_token = tokens.sign({"sub": "00000000-0000-4000-8000-000000000001", "role": "project_admin"})
    callers = {
        "none": ({}, "No API key provided"),
        "anon": (anon_headers(client), "No API key provided"),
        "user": (
            user_headers(client, "00000000-0000-4000-8000-000000000002", "u@example.com"),
            "No API key provided",
        ),
        "admin-token": ({"Authorization": f"Bearer {admin_token}"}, "No API key provided"),
        "wrong-key": ({"Authorization": "Bearer ik_" + "0" * 32}, "Invalid API key"),
        "wrong-x-api-key": ({"x-api-key": "ik_nope"}, "Invalid API key"),
    }
    for name, (headers, message) in callers.items():
        for path, body in (
            ("remember", STRIPE),
            ("recall", {"query": "stripe"}),
            ("index", {}),
        ):
            answer = client.post(f"/api/memory/{path}", json=body, headers=headers)
            assert answer.status_code == 401, (name, path, answer.text)
            assert answer.json()["error"] == "AUTH_INVALID_API_KEY", (name, path)
            assert answer.json()["message"] == message, (name, path)
    assert fake.calls == []
    refused = sql(
        "select actor, outcome from system.audit_logs where module = 'MEMORY' and action = 'REMEMBER_MEMORY' "
        "and outcome = 'refused' and actor = 'anon'"
    )
    assert refused, "a refused remember by a valid credential is audited"
    # The API key also works as x-api-key, as InsForge reads it.
    key = admin["Authorization"].removeprefix("Bearer ")
    assert client.post("/api/memory/index", json={}, headers={"x-api-key": key}).status_code == 200


def test_agent_scopes_reach_memory_as_reads_and_writes(
    client: TestClient, admin: dict[str, str], scope: str
) -> None:
    reader = agent_headers(client, admin, ["memory:read"])
    writer = agent_headers(client, admin, ["memory:write"])
    stranger = agent_headers(client, admin, ["schedules:write"])

    assert remember(client, writer, scope=scope, **STRIPE)[0]["action"] == "ADD"
    assert recall(client, reader, scope=scope, query="stripe webhook signing secret")
    assert index(client, reader, scope)
    refused = client.post("/api/memory/remember", json={"scope": scope, **STRIPE}, headers=reader)
    assert refused.status_code == 403 and "memory:write" in refused.json()["message"]
    for path in ("recall", "index"):
        answer = client.post(
            f"/api/memory/{path}", json={"scope": scope, "query": "stripe"}, headers=stranger
        )
        assert answer.status_code == 403 and "memory:read" in answer.json()["message"]

    # The same reach over MCP.
    listed = orjson.loads(mcp_call(client, reader, "get-memory-index", {"scope": scope}))
    assert [e["title"] for e in listed["entries"]] == [STRIPE["title"]]
    recalled = orjson.loads(
        mcp_call(client, reader, "recall-memories", {"scope": scope, "query": "stripe secret vault"})
    )
    assert recalled["memories"][0]["title"] == STRIPE["title"]
    assert "memory:write" in mcp_call(client, reader, "remember-memory", {"scope": scope, **STRIPE})
    fact: dict[str, object] = {
        "scope": scope,
        "title": "deploys",
        "content": "Deploys run from GitHub Actions on main.",
    }
    made = orjson.loads(mcp_call(client, writer, "remember-memory", fact))
    assert made["results"][0]["action"] == "ADD"


def test_model_calls_land_in_the_usage_ledger_as_the_caller(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter, sql: Sql
) -> None:
    name = f"ledger-{secrets.token_hex(3)}"
    agent = agent_headers(client, admin, ["memory:write"], name=name)
    fake.script_model(
        CHAT, Reply(content='{"memories": [{"kind": "fact", "title": "t1", "content": "c1 words"}]}')
    )
    remember(client, agent, scope=scope, transcript="a long task")
    recall(client, agent, scope=scope, query="c1 words")

    def rows() -> list[dict[str, Any]]:
        found = sql(
            "select endpoint, model, status, input_tokens from ai.usage where principal like %s "
            "order by created_at",
            f"agent:{name}%",
        )
        return found if len(found) >= 3 else []

    used = wait_for(rows)
    assert [(r["endpoint"], r["model"]) for r in used] == [
        ("/api/memory/remember", CHAT),
        ("/api/memory/remember", EMBED),
        ("/api/memory/recall", EMBED),
    ]
    assert all(r["status"] == "ok" and r["input_tokens"] > 0 for r in used)


def test_an_upstream_failure_is_a_clear_error_and_stores_nothing(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter, sql: Sql
) -> None:
    fake.rule(EMBED, Fail(502, "Provider returned error"))
    answer = client.post("/api/memory/remember", json={"scope": scope, **STRIPE}, headers=admin)
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"] == "AI_UPSTREAM_UNAVAILABLE" and answer.json()["nextActions"]
    recalled = client.post("/api/memory/recall", json={"scope": scope, "query": "stripe"}, headers=admin)
    assert recalled.status_code == 502
    fake.rule(EMBED, None)
    assert index(client, admin, scope) == []
    failed = sql(
        "select outcome from system.audit_logs where module = 'MEMORY' and details->>'scope' = %s", scope
    )
    assert [row["outcome"] for row in failed] == ["failed"]

    # A transcript whose memories cannot be embedded stores none of them.
    fake.script_model(CHAT, Reply(content='{"memories": [{"title": "a", "content": "b"}]}'))
    fake.rule(EMBED, Fail(503, "Service unavailable"))
    assert (
        client.post(
            "/api/memory/remember", json={"scope": scope, "transcript": "t"}, headers=admin
        ).status_code
        == 502  # (the gateway reports the provider's 503 as a bad gateway)
    )
    fake.rule(EMBED, None)
    assert index(client, admin, scope) == []

    # The reconciling model failing on a single memory: nothing stored, the error answered.
    remember(client, admin, scope=scope, **STRIPE)
    fake.rule(CHAT, Fail(502, "Upstream down"))
    again = client.post("/api/memory/remember", json={"scope": scope, **STRIPE, "title": "x"}, headers=admin)
    assert again.status_code == 502
    fake.rule(CHAT, None)
    assert len(index(client, admin, scope)) == 1


def test_a_transcript_keeps_what_was_stored_when_one_memory_fails(
    client: TestClient, admin: dict[str, str], scope: str, fake: FakeOpenRouter
) -> None:
    [existing] = remember(client, admin, scope=scope, **STRIPE)
    extracted = {
        "memories": [
            {"title": "frankfurt database", "content": "The production database runs in Frankfurt."},
            {"title": STRIPE["title"], "content": STRIPE["content"]},
        ]
    }
    fake.script_model(CHAT, Reply(content=orjson.dumps(extracted).decode()), Fail(400, "bad request"))
    results = remember(client, admin, scope=scope, transcript="long session")
    assert results[0]["action"] == "ADD" and results[0]["title"] == "frankfurt database"
    assert results[1]["action"] == "NOOP" and "error" in results[1] and "id" not in results[1]
    assert {e["title"] for e in index(client, admin, scope)} == {"frankfurt database", existing["title"]}
