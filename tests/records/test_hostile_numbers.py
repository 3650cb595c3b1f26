"""Digits that are not ASCII digits, over HTTP: `str.isdigit` accepts `²`, `int` refuses it, and the answer
must be PostgREST's 400 parse error, never a 500 (issue 10, item 8)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"


@pytest.mark.parametrize(
    "query",
    [
        "posts?limit=²",
        "posts?offset=³",
        "posts?select=id,comments(id)&comments.limit=²",
        "posts?select=id,meta->²",
        "posts?select=id,meta->>٣",
        "posts?meta->>²=eq.1",
        "posts?or=(meta->>².eq.1,id.eq.1)",
        "posts?order=meta->²",
    ],
)
def test_non_ascii_digits_in_the_query_are_parse_errors(
    client: TestClient, admin: dict[str, str], query: str
) -> None:
    response = client.get(f"{RECORDS}/{query}", headers=admin)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details", "hint"}
    assert body["code"] == "PGRST100"


def test_a_max_affected_too_long_for_int_is_an_invalid_preference(
    client: TestClient, admin: dict[str, str]
) -> None:
    """(`max-affected=²` is in test_preferences: the test client re-encodes header bytes as UTF-8.)"""
    prefer = "max-affected=" + "1" * 5000
    lenient = client.delete(f"{RECORDS}/posts?id=eq.0", headers={**admin, "Prefer": prefer})
    assert lenient.status_code == 204, lenient.text
    strict = client.delete(
        f"{RECORDS}/posts?id=eq.0", headers={**admin, "Prefer": "handling=strict," + prefer}
    )
    assert strict.status_code == 400, strict.text
    assert strict.json()["code"] == "PGRST122"


def test_a_json_key_that_looks_like_a_signed_index_is_a_key(
    client: TestClient, admin: dict[str, str]
) -> None:
    """`--5` is not an array index (it used to reach `int()` and fail): it is an object key."""
    response = client.get(f"{RECORDS}/posts?select=id,meta->--5&id=eq.1", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == [{"id": 1, "--5": None}]


def test_array_indexes_still_index(client: TestClient, admin: dict[str, str]) -> None:
    query = "posts?select=id,first:meta->nested->a->0,last:meta->nested->a->-1&id=eq.1"
    response = client.get(f"{RECORDS}/{query}", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == [{"id": 1, "first": 1, "last": 2}]
