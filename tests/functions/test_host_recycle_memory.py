"""The functions host replaced for its memory, with the real Deno binary: once past
`host_recycle_memory_mb` while it holds a version that a fresh process would not (a function deployed again),
and not again for what every fresh process of the same functions holds (a function that failed to load
stays in the isolate as a module, in the successor too). The bound here is 1 MB, which any host passes."""

from __future__ import annotations

import time
from typing import Any

import httpx
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy
from tests.functions.hosting import host_health, host_settings, served

settings = host_settings(host_recycle_versions=0, host_recycle_memory_mb=1)

#: Every answer says which isolate gave it (a value on `globalThis`, which a fresh process does not have).
ANSWER = "const g = globalThis as any;\ng.isolate ??= crypto.randomUUID();\n"
BROKEN = "throw new Error('broken at its top level');\nexport default () => new Response('never');"


def answer(version: int) -> str:
    return f"{ANSWER}export default () => Response.json({{ version: {version}, isolate: g.isolate }});"


def settled(client: TestClient) -> dict[str, Any]:
    """The host's health once no replacement is under way."""
    deadline = time.monotonic() + 30
    while True:
        health = host_health(client)
        if health["status"] == "running" and "being replaced" not in str(health["detail"]):
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


def stays(client: TestClient, host: httpx.Client, slug: str, health: dict[str, Any]) -> None:
    """The host is not replaced over a few seconds (pinged every second while it serves a function, it would
    be within two), and answers as it did."""
    answered = host.get(f"/{slug}").json()
    time.sleep(4)
    now = settled(client)
    assert (now["pid"], now["recycles"]) == (health["pid"], health["recycles"])
    assert host.get(f"/{slug}").json() == answered


def test_a_host_past_its_memory_bound_is_replaced_once_not_for_what_any_fresh_host_holds(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy
) -> None:
    slug = deploy(answer(0))
    first = served(host, slug).json()
    broken = deploy(BROKEN)
    deadline = time.monotonic() + 30
    while broken not in (health := settled(client))["failed"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    # A module that failed to load is held by any process that loads these functions: no replacement; nor
    # when the host tries it again, as it does whenever its configuration changes (here, a new function).
    stays(client, host, slug, health)
    served(host, deploy(answer(0)))
    stays(client, host, slug, health)
    assert host.get(f"/{slug}").json() == first

    # A replaced version is not: past 1 MB, the host is replaced, once.
    response = client.put(f"/api/functions/{slug}", json={"code": answer(1)}, headers=admin)
    assert response.status_code == 200, response.text
    while (now := host.get(f"/{slug}").json()) == first or now["isolate"] == first["isolate"]:
        assert time.monotonic() < deadline + 30, now
        time.sleep(0.1)
    assert now["version"] == 1
    replaced = settled(client)
    assert replaced["recycles"] == health["recycles"] + 1
    stays(client, host, slug, replaced)
