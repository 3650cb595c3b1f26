"""`/api/docs`: InsForge's doc types and feature/language documents, written for Kilnbase; a capability this
server does not have says so plainly."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from kilnbase.agent_docs.service import DOC_TYPES


def test_index_lists_every_document(client: TestClient) -> None:
    listed = client.get("/api/docs").json()
    endpoints = {entry["endpoint"] for entry in listed}
    assert {f"/api/docs/{doc}" for doc in DOC_TYPES} <= endpoints
    assert {"/api/docs/db/rest-api", "/api/docs/auth/python", "/api/docs/ai/typescript"} <= endpoints


@pytest.mark.parametrize("doc_type", DOC_TYPES)
def test_every_doc_type_answers_without_a_credential(client: TestClient, doc_type: str) -> None:
    response = client.get(f"/api/docs/{doc_type}")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == doc_type and body["content"].startswith("# ")


@pytest.mark.parametrize("feature", ["storage", "functions", "realtime", "payments"])
@pytest.mark.parametrize("language", ["typescript", "rest-api", "python"])
def test_installed_capabilities_are_documented(client: TestClient, feature: str, language: str) -> None:
    content = client.get(f"/api/docs/{feature}/{language}").json()["content"]
    assert "not available" not in content and "has no" not in content
    assert "http://localhost:7130" in content
    assert f"```{'sh' if language == 'rest-api' else language}\n" in content


@pytest.mark.parametrize(
    ("path", "feature"),
    [
        ("/api/docs/deployment", "deployment"),
    ],
)
def test_missing_capabilities_say_so(client: TestClient, path: str, feature: str) -> None:
    content = client.get(path).json()["content"]
    assert "not available in this server" in content
    assert f"has no {feature} API yet" in content


def test_doc_types_name_their_documents(client: TestClient) -> None:
    assert "storage.from(" in client.get("/api/docs/storage-sdk").json()["content"]
    assert "functions.invoke(" in client.get("/api/docs/functions-sdk").json()["content"]
    assert "realtime.subscribe(" in client.get("/api/docs/real-time").json()["content"]


def test_instructions_name_what_exists(client: TestClient) -> None:
    content = client.get("/api/docs/instructions").json()["content"]
    assert "Kilnbase" in content and "get-backend-metadata" in content
    table = [line for line in content.splitlines() if line.startswith("| ")]
    available = " ".join(line for line in table if "| available |" in line)
    for capability in ("Database", "Auth", "Storage", "Edge functions", "Realtime", "AI model gateway"):
        assert capability in available
    missing = [line for line in table if "**not in this server yet**" in line]
    assert missing == [
        "| Site deployments | **not in this server yet** | their docs say so; do not call them |"
    ]


def test_sdk_document_types(client: TestClient) -> None:
    assert client.get("/api/docs/db/rest-api").json()["type"] == "db-rest-api"
    assert client.get("/api/docs/auth/typescript").json()["type"] == "auth-sdk-typescript"
    python = client.get("/api/docs/db/python").json()
    assert python["type"] == "db-sdk-python" and "SyncPostgrestClient" in python["content"]


def test_unknown_documents_are_404(client: TestClient) -> None:
    for path in ("/api/docs/nope", "/api/docs/db/cobol", "/api/docs/db/swift"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "DOCS_NOT_FOUND"
    assert "rest-api" in client.get("/api/docs/db/swift").json()["nextActions"]


def test_an_absent_capability_route_says_what_is_missing(client: TestClient) -> None:
    response = client.get("/api/deployments/abc")
    assert response.status_code == 404
    assert "this Kilnbase server has no deployments API" in response.json()["message"]
    # A path under a module that exists is a plain 404.
    assert "no database API" not in client.get("/api/database/nope").json()["message"]
