"""The cap on S3 access keys (50 per project) holds when admins create keys at the same moment: each
creation counts the keys and inserts one in a transaction that takes a lock first, so two creations can no
longer both count 49 and both insert. A module of its own: its database holds only the keys it makes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.testclient import TestClient

from kilnbase.storage.s3_access_keys import MAX_KEYS

KEYS = "/api/storage/s3/access-keys"
AT_ONCE = 12


def test_concurrent_creations_never_pass_the_cap(client: TestClient, admin: dict[str, str]) -> None:
    for _ in range(MAX_KEYS - 2):
        assert client.post(KEYS, json={}, headers=admin).status_code == 201
    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers: list[Any] = list(
            pool.map(lambda _: client.post(KEYS, json={}, headers=admin), range(AT_ONCE))
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 201] + [400] * (AT_ONCE - 2), [answer.text for answer in answers]
    refused = next(answer.json() for answer in answers if answer.status_code == 400)
    assert refused["error"] == "STORAGE_INVALID_PARAMETER" and f"({MAX_KEYS})" in refused["message"]
    assert refused["nextActions"]
    assert len(client.get(KEYS, headers=admin).json()) == MAX_KEYS
