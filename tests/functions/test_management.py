"""`/api/functions`: InsForge's fields, slug rules and statuses; deno check before code is served; audit."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.functions.conftest import Deploy, new_slug
from tests.support.app import anon_headers, services_of

HELLO = "export default () => new Response('v1');"


def test_create_get_list_update_delete(client: TestClient, admin: dict[str, str]) -> None:
    slug = new_slug()
    created = client.post(
        "/api/functions",
        json={"name": "Hello", "slug": slug, "code": HELLO, "description": "says hello"},
        headers=admin,
    )
    assert created.status_code == 201
    body = created.json()
    assert body["success"] is True
    assert body["deployment"] is None
    function = body["function"]
    assert {
        "id",
        "slug",
        "name",
        "description",
        "code",
        "status",
        "createdAt",
        "updatedAt",
        "deployedAt",
    } <= set(function)
    assert (function["slug"], function["status"], function["code"]) == (slug, "active", HELLO)

    got = client.get(f"/api/functions/{slug}", headers=admin).json()
    assert got["code"] == HELLO
    assert got["description"] == "says hello"

    listed = client.get("/api/functions", headers=admin).json()
    assert slug in [f["slug"] for f in listed["functions"]]
    assert "code" not in listed["functions"][0]
    assert listed["runtime"]["status"] == "running"
    assert listed["runtime"]["sandbox"]["detail"]

    updated = client.put(
        f"/api/functions/{slug}", json={"code": "export default () => new Response('v2');"}, headers=admin
    )
    assert updated.status_code == 200
    assert updated.json()["function"]["code"].endswith("'v2');")
    assert client.get(f"/functions/{slug}").text == "v2"

    deleted = client.delete(f"/api/functions/{slug}", headers=admin)
    assert deleted.json() == {"success": True, "message": f"Function {slug} deleted successfully"}
    assert client.get(f"/functions/{slug}").status_code == 404
    assert client.get(f"/api/functions/{slug}", headers=admin).status_code == 404

    audits = client.get(
        "/api/logs/audits", params={"module": "FUNCTIONS", "limit": 1000}, headers=admin
    ).json()
    actions = {row["action"] for row in audits if row["details"].get("slug") == slug}
    assert {"CREATE_FUNCTION", "UPDATE_FUNCTION", "DELETE_FUNCTION"} <= actions


def test_slug_rules(client: TestClient, admin: dict[str, str]) -> None:
    for slug in ("bad slug", "dots.not.allowed", "health", "HEALTH", "x" * 65):
        response = client.post(
            "/api/functions", json={"name": "n", "slug": slug, "code": HELLO}, headers=admin
        )
        assert response.status_code == 400, slug
        assert response.json()["error"] == "INVALID_INPUT"
    name = f"My Function {new_slug()}"
    derived = client.post("/api/functions", json={"name": name, "code": HELLO}, headers=admin)
    assert derived.status_code == 201
    assert derived.json()["function"]["slug"] == name.lower().replace(" ", "-")


def test_duplicate_is_409(client: TestClient, admin: dict[str, str], deploy: Deploy) -> None:
    slug = deploy(HELLO)
    response = client.post("/api/functions", json={"name": "x", "slug": slug, "code": HELLO}, headers=admin)
    assert response.status_code == 409
    assert response.json()["error"] == "FUNCTION_ALREADY_EXISTS"


def test_missing_fields_and_oversized_code(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/api/functions", json={"name": "x"}, headers=admin).status_code == 400
    assert client.post("/api/functions", json={"code": HELLO}, headers=admin).status_code == 400
    too_big = "// " + "x" * (1024 * 1024) + "\n" + HELLO
    response = client.post("/api/functions", json={"name": "big", "code": too_big}, headers=admin)
    assert response.status_code == 413
    status = client.post(
        "/api/functions",
        json={"name": "s", "slug": new_slug(), "code": HELLO, "status": "error"},
        headers=admin,
    )
    assert status.status_code == 400


def test_a_null_status_is_refused_not_a_crash(client: TestClient, admin: dict[str, str]) -> None:
    """As InsForge's schema refuses it: a 400 that names the field, and no function."""
    slug = new_slug()
    body = {"name": "s", "slug": slug, "code": HELLO, "status": None}
    response = client.post("/api/functions", json=body, headers=admin)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_INPUT"
    assert "status" in response.json()["message"]
    assert client.get(f"/api/functions/{slug}", headers=admin).status_code == 404


def test_failed_check_leaves_the_previous_version_serving(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    slug = deploy(HELLO)
    other = deploy("export default () => new Response('other');")
    assert client.get(f"/functions/{slug}").text == "v1"
    broken = (
        "export default (req: Request): Response => { const n: number = 'text'; return new Response(n); };"
    )
    response = client.put(f"/api/functions/{slug}", json={"code": broken}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "FUNCTION_CHECK_FAILED"
    assert "not assignable to type 'number'" in response.json()["message"]
    assert client.get(f"/functions/{slug}").text == "v1"
    assert client.get(f"/api/functions/{slug}", headers=admin).json()["code"] == HELLO
    assert client.get(f"/functions/{other}").text == "other"
    syntax = client.post("/api/functions", json={"name": "s", "code": "export default ((("}, headers=admin)
    assert syntax.status_code == 400


def test_the_trail_tells_a_failed_check_from_a_refusal(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    """A deploy that deno check fails was tried and failed; one with a bad field was refused before it ran."""
    slug = deploy(HELLO)
    broken = client.put(f"/api/functions/{slug}", json={"code": "export default ((("}, headers=admin)
    assert broken.json()["error"] == "FUNCTION_CHECK_FAILED"
    refused = client.put(f"/api/functions/{slug}", json={"status": "sleeping"}, headers=admin)
    assert refused.status_code == 400
    audits = client.get(
        "/api/logs/audits", params={"module": "FUNCTIONS", "limit": 1000}, headers=admin
    ).json()
    ours = [
        row for row in audits if row["details"].get("slug") == slug and row["action"] == "UPDATE_FUNCTION"
    ]
    assert sorted(row["outcome"] for row in ours) == ["failed", "refused"]
    failed = next(row for row in ours if row["outcome"] == "failed")
    assert "deno check" in failed["details"]["error"]


def test_draft_is_stored_not_served(client: TestClient, admin: dict[str, str], deploy: Deploy) -> None:
    slug = deploy(HELLO, status="draft")
    assert client.get(f"/api/functions/{slug}", headers=admin).json()["status"] == "draft"
    assert client.get(f"/functions/{slug}").status_code == 404
    activated = client.put(f"/api/functions/{slug}", json={"status": "active"}, headers=admin)
    assert activated.json()["function"]["status"] == "active"
    assert client.get(f"/functions/{slug}").text == "v1"
    client.put(f"/api/functions/{slug}", json={"status": "draft"}, headers=admin)
    assert client.get(f"/functions/{slug}").status_code == 404


def test_unknown_function(client: TestClient, admin: dict[str, str]) -> None:
    missing = client.post("/functions/no-such-function-here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "FUNCTION_NOT_FOUND"
    assert (
        client.put("/api/functions/no-such-function-here", json={"name": "x"}, headers=admin).status_code
        == 404
    )
    assert client.delete("/api/functions/no-such-function-here", headers=admin).status_code == 404


def test_management_needs_admin(client: TestClient) -> None:
    anon = anon_headers(client)
    assert client.get("/api/functions", headers=anon).status_code == 401
    assert client.post("/api/functions", json={"name": "x", "code": HELLO}, headers=anon).status_code == 401
    assert client.get("/api/functions").status_code == 401


def test_a_second_server_warms_and_follows_changes(
    client: TestClient, admin: dict[str, str], settings: Settings, deploy: Deploy
) -> None:
    slug = deploy(HELLO)
    drafted = deploy(HELLO, status="draft")
    with TestClient(create_app(settings)) as restarted:  # a second server over the same database
        deadline = time.monotonic() + 30
        while True:
            warm = restarted.get("/api/functions", headers=admin).json()["runtime"]
            if slug in warm["warmFunctions"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert drafted not in warm["warmFunctions"]
        assert restarted.get(f"/functions/{slug}").text == "v1"
        # A change made through one server reaches the other's warm workers (NOTIFY kilnbase_functions).
        v2 = "export default () => new Response('v2');"
        assert client.put(f"/api/functions/{slug}", json={"code": v2}, headers=admin).status_code == 200
        deadline = time.monotonic() + 15
        while restarted.get(f"/functions/{slug}").text != "v2":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.delete(f"/api/functions/{slug}", headers=admin)
        deadline = time.monotonic() + 15
        while restarted.get(f"/functions/{slug}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_check_cannot_read_the_servers_files(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    """`deno check` runs before the code is trusted and quotes what it reads: an import of the server's own
    key file finds nothing, so its fields never reach the error (bubblewrap is on wherever it can run)."""
    if not services_of(client).functions.runtime.sandbox.enabled:
        pytest.skip("bubblewrap cannot run here")
    keys = settings.data_dir / "keys.json"
    assert "api_key" in keys.read_text()
    code = (
        f'import data from "{keys.as_uri()}" with {{ type: "json" }};\n'
        "const n: number = data;\n"
        "export default () => new Response(String(n));\n"
    )
    response = client.post("/api/functions", json={"name": "peek", "code": code}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "FUNCTION_CHECK_FAILED"
    assert "Cannot find module" in response.json()["message"]
    assert "api_key" not in response.text
