"""Writing an entry through `/api/kv`, for the key-value store's tests."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def put(client: TestClient, headers: dict[str, str], ns: str, key: str, **body: Any) -> dict[str, Any]:
    """PUT the entry (`body`: value, ttl, visibility, ifNotExists); its 200 answer."""
    response = client.put(f"/api/kv/entries/{ns}/{key}", headers=headers, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
