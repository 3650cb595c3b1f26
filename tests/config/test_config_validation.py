"""Every file the schema refuses: a 400 in InsForge's shape, `{error: "config_validation", message, path}`,
naming where the problem is, and nothing changed. Unknown keys, and settings Kilnbase does not have, are
refused rather than ignored."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.config.conftest import apply, live

#: (file, the path the answer names, words its message holds)
REFUSED: list[tuple[Any, str, str]] = [
    ([], "", "must be an object"),
    ({"functions": {}}, "functions", "is not a known key"),
    ({"project_id": 7}, "project_id", "must be a string"),
    ({"auth": "on"}, "auth", "must be an object"),
    ({"auth": {"mfa": True}}, "auth.mfa", "is not a known key"),
    ({"auth": {"jwt_expiry": "3600"}}, "auth.jwt_expiry", "must be a positive integer"),
    ({"auth": {"jwt_expiry": 0}}, "auth.jwt_expiry", "must be a positive integer"),
    ({"auth": {"jwt_expiry": True}}, "auth.jwt_expiry", "must be a positive integer"),
    ({"auth": {"jwt_expiry": 3600}}, "auth.jwt_expiry", "KILNBASE_AUTH_ACCESS_TOKEN_SECONDS (900 here)"),
    ({"auth": {"enable_signup": "yes"}}, "auth.enable_signup", "must be a boolean"),
    ({"auth": {"site_url": "https://app.example.com"}}, "auth.site_url", "not supported by Kilnbase"),
    ({"auth": {"additional_redirect_urls": "https://a.example"}}, "auth.additional_redirect_urls", "array"),
    (
        {"auth": {"additional_redirect_urls": ["https://a.example", 3]}},
        "auth.additional_redirect_urls",
        "array",
    ),
    (
        {"auth": {"additional_redirect_urls": ["https://a.example", "javascript:alert(1)"]}},
        "auth.additional_redirect_urls.1",
        "Invalid URL or wildcard URL",
    ),
    (
        {"auth": {"additional_redirect_urls": ["https://a.example/" + "x" * 2048]}},
        "auth.additional_redirect_urls.0",
        "at most 2048 characters",
    ),
    (
        {"auth": {"additional_redirect_urls": [f"https://a{n}.example" for n in range(101)]}},
        "auth.additional_redirect_urls",
        "at most 100 URLs",
    ),
    ({"storage": []}, "storage", "must be an object"),
    ({"storage": {"policies": {}}}, "storage.policies", "is not a known key"),
    ({"storage": {"buckets": ["a"]}}, "storage.buckets", "must be an object map"),
    ({"storage": {"buckets": {"bad name!": {}}}}, "storage.buckets.bad name!", "Invalid bucket name"),
    ({"storage": {"buckets": {"media": True}}}, "storage.buckets.media", "must be an object"),
    ({"storage": {"buckets": {"media": {"size": 1}}}}, "storage.buckets.media.size", "is not a known key"),
    (
        {"storage": {"buckets": {"media": {"public": "yes"}}}},
        "storage.buckets.media.public",
        "must be a boolean",
    ),
    (
        {"storage": {"buckets": {f"b{n}": {} for n in range(1001)}}},
        "storage.buckets",
        "at most 1000 buckets",
    ),
]


@pytest.mark.parametrize(("file", "path", "words"), REFUSED, ids=[case[1] or "root" for case in REFUSED])
def test_a_refused_file_names_its_path_and_changes_nothing(
    client: TestClient, admin: dict[str, str], file: Any, path: str, words: str
) -> None:
    before = live(client, admin)
    for dry_run in (False, True):
        answer = apply(client, admin, file, dry_run=dry_run)
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["error"] == "config_validation"
        assert body["path"] == path
        assert body["message"].startswith(f"config.{path}: " if path else "config: ")
        assert words in body["message"]
    assert live(client, admin) == before


def test_the_server_s_own_jwt_expiry_is_accepted(client: TestClient, admin: dict[str, str]) -> None:
    """What `GET /api/config` exports applies unchanged."""
    exported = live(client, admin)
    answer = apply(client, admin, {"project_id": "p", **exported})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "plan": {"changes": [], "summary": {"add": 0, "modify": 0, "remove": 0, "kept": 0}},
        "applied": False,
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "config is required"),
        ({"config": {}, "dry_run": "yes"}, "dry_run must be a boolean"),
        ({"config": {}, "prune": 1}, "prune must be a boolean"),
        ({"config": {}, "force": True}, "Unknown field 'force'"),
        ([{"config": {}}], "must be a JSON object"),
    ],
)
def test_a_malformed_body_is_refused(
    client: TestClient, admin: dict[str, str], body: Any, words: str
) -> None:
    answer = client.post("/api/config/apply", headers=admin, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_INPUT"
    assert words in answer.json()["message"]


def test_a_body_that_is_not_json(client: TestClient, admin: dict[str, str]) -> None:
    answer = client.post(
        "/api/config/apply", headers={**admin, "Content-Type": "application/json"}, content=b"{config"
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_INPUT"
