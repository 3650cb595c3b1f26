"""Health, error shapes, CORS, JWKS, and the request log."""

from __future__ import annotations

import json
import logging

import jwt
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.support.app import admin_headers, agent_headers, services_of
from tests.support.servers import free_port


def test_health_reports_insforge_shape_and_checks_the_database(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["service"] == "Kilnbase"
    major, minor, patch = (int(part) for part in body["version"].split("."))
    assert (major, minor, patch) >= (1, 5, 1)
    assert body["kilnbaseVersion"]
    assert body["timestamp"].endswith("Z")
    assert body["checks"]["database"]["status"] == "ok"


def test_health_answers_an_agent_key_whatever_its_scopes(client: TestClient) -> None:
    """The health check is public (no credential needed), so an agent key whose scopes name other groups
    reaches it too, as the anon key and no credential do: a client asks it before anything else."""
    admin = admin_headers(client)
    for scopes in (["database:write"], ["tool:list-tables"]):
        response = client.get("/api/health", headers=agent_headers(client, admin, scopes))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"


def test_unknown_route_is_404_in_insforge_shape(client: TestClient) -> None:
    response = client.get("/api/no/such/thing")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "NOT_FOUND"
    assert body["statusCode"] == 404
    assert "/api/no/such/thing" in body["message"]
    assert body["nextActions"]


def test_wrong_method_is_a_client_error(client: TestClient) -> None:
    response = client.post("/api/health")
    assert response.status_code == 405
    assert response.json()["statusCode"] == 405
    assert "GET" in response.json()["nextActions"]  # the methods the path takes


def test_cors_preflight_allows_credentials_and_reflects_origin(client: TestClient) -> None:
    response = client.options(
        "/api/health",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, prefer",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "PATCH" in response.headers["access-control-allow-methods"]


def test_cors_exposes_what_postgrest_and_tus_clients_read(client: TestClient) -> None:
    response = client.get("/api/health", headers={"Origin": "http://app.example"})
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    # PostgREST's list (its CORS docs), with Preference-Applied.
    assert {"content-range", "content-location", "location", "range-unit", "preference-applied"} <= exposed
    # What tus-js-client's docs ask a server to expose to a browser.
    tus = {"location", "upload-offset", "upload-length", "upload-metadata", "tus-resumable", "tus-version"}
    assert tus | {"tus-extension", "tus-max-size"} <= exposed
    assert {"etag", "retry-after", "idempotent-replayed", "x-should-retry"} <= exposed


def test_jwks_serves_the_signing_key_at_both_paths(client: TestClient) -> None:
    first = client.get("/.well-known/jwks.json").json()
    second = client.get("/api/.well-known/jwks.json").json()
    assert first == second
    signing, previous = first["keys"]  # ES256 signs; the RS256 key of earlier tokens still verifies
    assert signing["kty"] == "EC" and signing["alg"] == "ES256" and signing["kid"]
    assert previous["kty"] == "RSA" and previous["alg"] == "RS256" and previous["kid"]
    assert not {"d", "p"} & (set(signing) | set(previous))  # never the private half
    token = services_of(client).core.tokens.sign({"sub": "u1", "role": "authenticated"})
    assert jwt.get_unverified_header(token)["kid"] == signing["kid"]
    public_key = jwt.PyJWK(signing).key
    assert jwt.decode(token, public_key, algorithms=["ES256"])["sub"] == "u1"


def test_one_json_log_line_per_request_without_secrets(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    api_key = services_of(client).core.keys.api_key
    with caplog.at_level(logging.INFO, logger="kilnbase.request"):
        client.get(f"/api/logs/audits?token={api_key}", headers={"Authorization": f"Bearer {api_key}"})
    records = [r for r in caplog.records if r.name == "kilnbase.request"]
    assert len(records) == 1
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["method"] == "GET" and fields["path"] == "/api/logs/audits"
    assert fields["status"] == 200 and fields["role"] == "project_admin"
    assert isinstance(fields["duration_ms"], float)
    from kilnbase.structured_log import JsonFormatter

    line = JsonFormatter().format(records[0])
    assert json.loads(line)["path"] == "/api/logs/audits"
    assert api_key not in line and api_key not in caplog.text


def test_health_is_honest_when_the_database_is_gone(settings: Settings) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as own_client:
        assert own_client.portal is not None
        own_client.portal.call(services_of(own_client).core.database.request_pool.close)
        response = own_client.get("/api/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy" and body["checks"]["database"] == {"status": "unavailable"}
        assert own_client.get("/dashboard").status_code == 503


def test_health_pings_a_configured_redis(settings: Settings) -> None:
    working = settings.model_copy(update={"rate_limit_redis_url": "redis://127.0.0.1:6379/0"})
    with TestClient(create_app(working), raise_server_exceptions=False) as own_client:
        response = own_client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["redis"]["status"] == "ok"


def test_health_says_degraded_without_its_redis_and_never_shows_the_url(settings: Settings) -> None:
    """Redis gone: the server still serves (200) and says so; never the URL (it may hold a password)."""
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    unreachable = settings.model_copy(update={"rate_limit_redis_url": url})
    with TestClient(create_app(unreachable), raise_server_exceptions=False) as own_client:
        response = own_client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"] == {"status": "unavailable"}
    assert body["checks"]["database"]["status"] == "ok"
    assert "hunter2" not in response.text


def test_dashboard_page_says_where_things_are(client: TestClient) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "healthy" in response.text and "kilnbase keys" in response.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
