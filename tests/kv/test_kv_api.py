"""`/api/kv` with the API key over the real database: InsForge's routes, shapes, codes and messages; TTLs
(an expired key is gone at once, pruned later); atomic incr, decr, setnx and cas under concurrency; every
mistake a 400 (or 413) that changes nothing; admin changes audited."""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.kv.entries import put
from tests.support.app import services_of

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def age(database_url: str, ns: str, key: str) -> None:
    """Move an entry's expiry into the past, as time would."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update kv.entries set expires_at = now() - interval '1 second' "
            "where namespace = %s and key = %s",
            (ns, key),
        )


def test_set_get_list_delete(client: TestClient, admin: dict[str, str], ns: str) -> None:
    value = {"theme": "dark", "n": [1, 2.5, None, True], "nested": {"ü": "ok"}}
    written = put(client, admin, ns, "settings:ui", value=value, visibility="public")
    assert written["created"] is True
    entry = written["entry"]
    assert set(entry) == {"namespace", "key", "value", "visibility", "expiresAt", "createdAt", "updatedAt"}
    assert (entry["namespace"], entry["key"], entry["value"]) == (ns, "settings:ui", value)
    assert entry["visibility"] == "public"
    assert ISO.match(entry["expiresAt"]) and ISO.match(entry["createdAt"]) and ISO.match(entry["updatedAt"])

    got = client.get(f"/api/kv/entries/{ns}/settings:ui", headers=admin)
    assert got.status_code == 200 and got.json() == {"value": value}

    again = put(client, admin, ns, "settings:ui", value="plain string", ttl=None)
    assert again["created"] is False
    assert again["entry"]["value"] == "plain string"
    assert again["entry"]["visibility"] == "private"  # replaced with the rest, as InsForge does
    assert again["entry"]["expiresAt"] is None

    for key, stored in (("b", None), ("a", 0), ("c", [])):
        put(client, admin, ns, key, value=stored)
    listed = client.get(f"/api/kv/entries/{ns}", headers=admin).json()["keys"]
    assert [row["key"] for row in listed] == ["a", "b", "c", "settings:ui"]
    assert set(listed[0]) == {"key", "visibility", "expiresAt", "updatedAt"}
    assert client.get(f"/api/kv/entries/{ns}/b", headers=admin).json() == {"value": None}
    paged = client.get(f"/api/kv/entries/{ns}?after=a&limit=2", headers=admin).json()["keys"]
    assert [row["key"] for row in paged] == ["b", "c"]

    deleted = client.delete(f"/api/kv/entries/{ns}/a", headers=admin)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True}
    assert client.delete(f"/api/kv/entries/{ns}/a", headers=admin).json() == {"deleted": False}
    missing = client.get(f"/api/kv/entries/{ns}/a", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "KV_NOT_FOUND"
    assert missing.json()["message"] == f"Key not found: {ns}/a"


def test_set_if_not_exists(client: TestClient, admin: dict[str, str], ns: str) -> None:
    first = put(client, admin, ns, "lock", value="me", ifNotExists=True)
    assert first["created"] is True and first["entry"]["value"] == "me"
    second = put(client, admin, ns, "lock", value="you", ifNotExists=True)
    assert second == {"created": False, "entry": None}
    assert client.get(f"/api/kv/entries/{ns}/lock", headers=admin).json() == {"value": "me"}


def test_concurrent_setnx_creates_once(client: TestClient, admin: dict[str, str], ns: str) -> None:
    def attempt(i: int) -> bool:
        body = {"value": i, "ifNotExists": True}
        response = client.put(f"/api/kv/entries/{ns}/once", headers=admin, json=body)
        assert response.status_code == 200, response.text
        created: bool = response.json()["created"]
        return created

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count(True) == 1


def test_incr_and_decr(client: TestClient, admin: dict[str, str], ns: str) -> None:
    url = f"/api/kv/entries/{ns}/hits"
    assert client.post(url + "/incr", headers=admin).json() == {"value": 1}
    assert client.post(url + "/incr", headers=admin, json={"by": 10}).json() == {"value": 11}
    assert client.post(url + "/decr", headers=admin, json={"by": 2.5}).json() == {"value": 8.5}
    assert client.post(url + "/incr", headers=admin, json={"by": -0.5}).json() == {"value": 8}
    ttl = client.get(url + "/ttl", headers=admin).json()["ttl"]
    assert 60 * 60 * 24 * 30 - 60 < ttl <= 60 * 60 * 24 * 30  # a new counter: InsForge's 30 days

    put(client, admin, ns, "text", value="41")
    assert client.post(f"/api/kv/entries/{ns}/text/incr", headers=admin).json() == {"value": 42}
    put(client, admin, ns, "word", value={"not": "a number"})
    refused = client.post(f"/api/kv/entries/{ns}/word/incr", headers=admin)
    assert refused.status_code == 400
    assert refused.json()["error"] == "KV_NOT_A_NUMBER"
    assert refused.json()["message"] == f"Value at {ns}/word is not a number"
    put(client, admin, ns, "huge", value=1.5e308)
    overflow = client.post(f"/api/kv/entries/{ns}/huge/incr", headers=admin, json={"by": 1e308})
    assert overflow.status_code == 400 and overflow.json()["error"] == "INVALID_INPUT"
    assert client.get(f"/api/kv/entries/{ns}/huge", headers=admin).json() == {"value": 1.5e308}


def test_concurrent_increments_are_all_counted(client: TestClient, admin: dict[str, str], ns: str) -> None:
    url = f"/api/kv/entries/{ns}/counter/incr"

    def bump(_: int) -> None:
        response = client.post(url, headers=admin, json={"by": 1})
        assert response.status_code == 200, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(40)))
    assert client.get(f"/api/kv/entries/{ns}/counter", headers=admin).json() == {"value": 40}


def test_compare_and_swap(client: TestClient, admin: dict[str, str], ns: str) -> None:
    url = f"/api/kv/entries/{ns}/state"
    put(client, admin, ns, "state", value={"phase": "idle", "n": 1})
    swapped = client.post(
        url + "/cas", headers=admin, json={"expected": {"n": 1, "phase": "idle"}, "next": "busy"}
    )
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["entry"]["value"] == "busy"
    mismatch = client.post(url + "/cas", headers=admin, json={"expected": "idle", "next": "x"})
    assert mismatch.status_code == 409
    assert mismatch.json()["error"] == "KV_CAS_MISMATCH"
    assert mismatch.json()["message"] == "Compare-and-swap failed: current value does not match expected"
    assert client.get(url, headers=admin).json() == {"value": "busy"}
    absent = client.post(f"/api/kv/entries/{ns}/nothing/cas", headers=admin, json={"expected": 1, "next": 2})
    assert absent.status_code == 404 and absent.json()["error"] == "KV_NOT_FOUND"


def test_concurrent_cas_lets_one_win(client: TestClient, admin: dict[str, str], ns: str) -> None:
    put(client, admin, ns, "token", value=0)

    def swap(i: int) -> int:
        body = {"expected": 0, "next": i + 1}
        return client.post(f"/api/kv/entries/{ns}/token/cas", headers=admin, json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(swap, range(12)))
    assert sorted(statuses) == [200] + [409] * 11


def test_ttl_expire_and_prune(client: TestClient, admin: dict[str, str], ns: str, database_url: str) -> None:
    put(client, admin, ns, "short", value=1, ttl=100)
    ttl = client.get(f"/api/kv/entries/{ns}/short/ttl", headers=admin).json()["ttl"]
    assert 98 <= ttl <= 100
    put(client, admin, ns, "forever", value=1, ttl=None)
    assert client.get(f"/api/kv/entries/{ns}/forever/ttl", headers=admin).json() == {"ttl": None}
    expired = client.post(f"/api/kv/entries/{ns}/forever/expire", headers=admin, json={"ttl": 5})
    assert expired.status_code == 200 and expired.json() == {"updated": True}
    assert client.get(f"/api/kv/entries/{ns}/forever/ttl", headers=admin).json()["ttl"] in (4, 5)
    kept = client.post(f"/api/kv/entries/{ns}/forever/expire", headers=admin, json={"ttl": None})
    assert kept.json() == {"updated": True}
    absent = client.post(f"/api/kv/entries/{ns}/absent/expire", headers=admin, json={"ttl": 5})
    assert absent.status_code == 404 and absent.json()["message"] == f"Key not found: {ns}/absent"
    assert client.get(f"/api/kv/entries/{ns}/absent/ttl", headers=admin).status_code == 404

    # Past its expiry an entry is gone at once for every call, before any prune.
    age(database_url, ns, "short")
    assert client.get(f"/api/kv/entries/{ns}/short", headers=admin).status_code == 404
    assert client.get(f"/api/kv/entries/{ns}/short/ttl", headers=admin).status_code == 404
    assert [row["key"] for row in client.get(f"/api/kv/entries/{ns}", headers=admin).json()["keys"]] == [
        "forever"
    ]
    assert client.post("/api/kv/mget", headers=admin, json={"namespace": ns, "keys": ["short"]}).json() == {
        "values": {}
    }
    cas = client.post(f"/api/kv/entries/{ns}/short/cas", headers=admin, json={"expected": 1, "next": 2})
    assert cas.status_code == 404
    assert (
        client.post(f"/api/kv/entries/{ns}/short/expire", headers=admin, json={"ttl": 9}).status_code == 404
    )
    # ...and a write to the key starts afresh: setnx creates, a counter starts from 0.
    assert put(client, admin, ns, "short", value="new", ifNotExists=True)["created"] is True
    age(database_url, ns, "short")
    assert client.post(f"/api/kv/entries/{ns}/short/incr", headers=admin).json() == {"value": 1}

    age(database_url, ns, "short")
    put(client, admin, ns, "gone-soon", value=1)
    age(database_url, ns, "gone-soon")
    pruned = client.portal.call(services_of(client).kv.prune_expired)  # type: ignore[union-attr]
    assert pruned >= 2
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select key from kv.entries where namespace = %s order by key", (ns,)).fetchall()
    assert [key for (key,) in rows] == ["forever"]


def test_mget_and_mset(client: TestClient, admin: dict[str, str], ns: str) -> None:
    entries = {"a": 1, "b": {"x": [1]}, "c": None}
    written = client.post(
        "/api/kv/mset", headers=admin, json={"namespace": ns, "entries": entries, "ttl": 60}
    )
    assert written.status_code == 200 and written.json() == {"count": 3}
    got = client.post("/api/kv/mget", headers=admin, json={"namespace": ns, "keys": ["a", "b", "c", "zz"]})
    assert got.status_code == 200 and got.json() == {"values": entries}
    again = client.post("/api/kv/mset", headers=admin, json={"namespace": ns, "entries": {"a": 2, "d": 4}})
    assert again.json() == {"count": 2}
    assert client.get(f"/api/kv/entries/{ns}/a", headers=admin).json() == {"value": 2}
    assert client.post("/api/kv/mset", headers=admin, json={"namespace": ns, "entries": {}}).json() == {
        "count": 0
    }
    # The default namespace, as InsForge's.
    key = f"k-{secrets.token_hex(4)}"
    client.post("/api/kv/mset", headers=admin, json={"entries": {key: "d"}})
    assert client.post("/api/kv/mget", headers=admin, json={"keys": [key]}).json() == {"values": {key: "d"}}
    assert client.get(f"/api/kv/entries/default/{key}", headers=admin).json() == {"value": "d"}


BAD_BODIES = [
    ("put", "", {"value": 1, "ttl": 0}),
    ("put", "", {"value": 1, "ttl": -5}),
    ("put", "", {"value": 1, "ttl": 1.5}),
    ("put", "", {"value": 1, "ttl": "60"}),
    ("put", "", {"value": 1, "ttl": 60 * 60 * 24 * 365 * 10 + 1}),
    ("put", "", {"value": 1, "visibility": "everyone"}),
    ("put", "", {"value": 1, "ifNotExists": "yes"}),
    ("put", "", {"value": "nul \u0000 inside"}),
    ("put", "", [1, 2]),
    ("post", "/incr", {"by": "1"}),
    ("post", "/incr", {"by": True}),
    ("post", "/expire", {}),
    ("post", "/expire", {"ttl": 0}),
    ("mget", "", {"keys": []}),
    ("mget", "", {"keys": ["a/b"]}),
    ("mget", "", {"keys": ["k"], "namespace": "x" * 257}),
    ("mget", "", {"keys": [f"k{i}" for i in range(101)]}),
    ("mset", "", {"entries": {"a/b": 1}}),
    ("mset", "", {"entries": {f"k{i}": i for i in range(101)}}),
    ("mset", "", {"entries": [1]}),
]


@pytest.mark.parametrize(("kind", "suffix", "body"), BAD_BODIES)
def test_bad_bodies_are_400s(
    client: TestClient, admin: dict[str, str], ns: str, kind: str, suffix: str, body: Any
) -> None:
    put(client, admin, ns, "k", value=7)
    url = f"/api/kv/entries/{ns}/k{suffix}"
    if kind == "put":
        response = client.put(url, headers=admin, json=body)
    elif kind == "post":
        response = client.post(url, headers=admin, json=body)
    else:
        response = client.post(f"/api/kv/{kind}", headers=admin, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "INVALID_INPUT"
    assert client.get(f"/api/kv/entries/{ns}/k", headers=admin).json() == {"value": 7}
    assert [row["key"] for row in client.get(f"/api/kv/entries/{ns}", headers=admin).json()["keys"]] == ["k"]


BAD_PATHS = [
    ("/api/kv/entries/a%2Fb/k", "Invalid namespace: "),
    ("/api/kv/entries/ns/a%2Fb", "Invalid key: "),
    ("/api/kv/entries/ns/a%2Fttl", "Invalid key: "),
    ("/api/kv/entries/ns/a%00b", "Invalid key: "),
    ("/api/kv/entries/" + "n" * 257 + "/k", "Invalid namespace: "),
    ("/api/kv/entries/ns/" + "k" * 513, "Invalid key: "),
    ("/api/kv/entries/ns/%FF", "Invalid key: "),
]


@pytest.mark.parametrize(("path", "message"), BAD_PATHS)
def test_bad_paths_are_400s(client: TestClient, admin: dict[str, str], path: str, message: str) -> None:
    for response in (
        client.get(path, headers=admin),
        client.put(path, headers=admin, json={"value": 1}),
        client.delete(path, headers=admin),
    ):
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "INVALID_INPUT"
        assert response.json()["message"].startswith(message)


def test_longest_names_and_unicode_work(client: TestClient, admin: dict[str, str]) -> None:
    ns, key = "n" * 255 + secrets.token_hex(1)[0], "ключ:" + "k" * 507
    assert put(client, admin, ns, key, value="ok")["entry"]["key"] == key
    assert client.get(f"/api/kv/entries/{ns}/{key}", headers=admin).json() == {"value": "ok"}


def test_value_too_large_is_413(client: TestClient, admin: dict[str, str], ns: str) -> None:
    big = client.put(f"/api/kv/entries/{ns}/big", headers=admin, json={"value": "x" * (256 * 1024)})
    assert big.status_code == 413
    assert big.json()["error"] == "KV_VALUE_TOO_LARGE"
    assert big.json()["message"] == "Value exceeds the 262144-byte limit"
    assert client.get(f"/api/kv/entries/{ns}/big", headers=admin).status_code == 404
    fits = client.put(f"/api/kv/entries/{ns}/big", headers=admin, json={"value": "x" * (256 * 1024 - 2)})
    assert fits.status_code == 200


def test_no_credential_is_401(client: TestClient, ns: str) -> None:
    response = client.get(f"/api/kv/entries/{ns}/k")
    assert response.status_code == 401
    assert client.post("/api/kv/mget", json={"keys": ["k"]}).status_code == 401


def test_admin_changes_are_audited(
    client: TestClient, admin: dict[str, str], ns: str, database_url: str
) -> None:
    put(client, admin, ns, "audited", value="secret value")
    client.post(f"/api/kv/entries/{ns}/audited/cas", headers=admin, json={"expected": "wrong", "next": 1})
    client.delete(f"/api/kv/entries/{ns}/audited", headers=admin)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select action, outcome, details::text from system.audit_logs "
            "where module = 'KV' and details->>'namespace' = %s order by created_at",
            (ns,),
        ).fetchall()
    assert [(action, outcome) for action, outcome, _ in rows] == [
        ("SET_KV_ENTRY", "success"),
        ("COMPARE_AND_SWAP_KV_ENTRY", "refused"),
        ("DELETE_KV_ENTRY", "success"),
    ]
    assert all("secret value" not in details for _, _, details in rows)


def test_a_pause_is_not_needed_for_time_to_pass(client: TestClient, admin: dict[str, str], ns: str) -> None:
    """A TTL of one second really expires (no clock of the test's own)."""
    put(client, admin, ns, "blink", value=1, ttl=1)
    deadline = time.monotonic() + 5
    while client.get(f"/api/kv/entries/{ns}/blink", headers=admin).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
