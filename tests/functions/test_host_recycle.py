"""The functions host replaced by a fresh process once it holds too many replaced function versions (modules
cannot be unloaded), with the real Deno binary: no invocation dropped, no gap, logs from both processes, and
the old host left serving when its successor cannot take over.

Every function answers with the isolate it runs in (a value kept on `globalThis`, which a fresh process does
not have), which tells the two hosts apart. The module's host is replaced after `BOUND` replaced versions;
the tests count on nothing else: whatever other tests deployed before, redeploying `BOUND` more times (or a
few more) replaces it."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy, function_logs, new_slug
from tests.functions.hosting import host_health, host_settings, served, until

BOUND = 2
#: Code that answers `{version, isolate}`.
ISOLATE = "const g = globalThis as any;\ng.isolate ??= crypto.randomUUID();\n"


settings = host_settings(
    timeout_ms=3000, max_concurrency=16, host_recycle_versions=BOUND, host_recycle_memory_mb=0
)


def versioned(version: int) -> str:
    return f"{ISOLATE}export default () => Response.json({{ version: {version}, isolate: g.isolate }});"


def redeploy(client: TestClient, admin: dict[str, str], slug: str, change: dict[str, Any]) -> None:
    """Deploy `change` to `slug` (new code, or just `status`: a new revision all the same); return once the
    host has loaded it and its owner has taken it in (the host replaced, or kept, if that made one replaced
    version too many)."""
    before = host_health(client)
    response = client.put(f"/api/functions/{slug}", json=change, headers=admin)
    assert response.status_code == 200, response.text

    def taken_in() -> bool:
        health = host_health(client)
        if health["pid"] != before["pid"]:
            return True
        return (
            health["replacedVersions"] > before["replacedVersions"]
            and "being replaced" not in health["detail"]
        )

    eventually(taken_in, "the host's owner did not take the new version in")


def redeploy_until(
    client: TestClient, admin: dict[str, str], wanted: Callable[[dict[str, Any]], bool]
) -> None:
    """Redeploy a function of its own (the same code: no `deno check`) until the host's health satisfies
    `wanted`, a few more times than the bound at most."""
    slug = new_slug("churn")
    client.post(
        "/api/functions", json={"name": slug, "slug": slug, "code": versioned(0)}, headers=admin
    ).raise_for_status()
    for _ in range(3 * BOUND):
        redeploy(client, admin, slug, {"status": "active"})
        if wanted(host_health(client)):
            return
    raise AssertionError(f"not after {3 * BOUND} versions: {host_health(client)}")


def eventually(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Wait for an eventual state: a replacement host that stalls while loading is found out only once it has
    stalled, after `deno check` and the load of every function, which on a loaded machine took over 20 s."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def until_exited(pid: int) -> None:
    eventually(lambda: exited(pid), f"pid {pid} still runs")


def refusals(client: TestClient) -> list[str]:
    """What the host's owner logged each time it could not replace the host."""
    return [row["message"] for row in function_logs(client, "-") if "Could not replace" in row["message"]]


@contextmanager
def calling(port: int, path: str, callers: int) -> Iterator[list[tuple[str, str]]]:
    """Call `path` without pause from `callers` threads while the block runs, half of them on kept-alive
    connections and half on a new connection each time; yields the (caller, answer or failure) pairs."""
    answers: list[tuple[str, str]] = []
    stop = threading.Event()

    def kept_alive(name: str) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.get(path)
                    answers.append((name, f"{response.status_code} {response.text}"))
                except httpx.TransportError as exc:
                    answers.append((name, f"failed: {exc!r}"))

    def new_each_time(name: str) -> None:
        while not stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                answers.append((name, f"{response.status} {response.read().decode()}"))
            except OSError as exc:
                answers.append((name, f"failed: {exc!r}"))
            finally:
                connection.close()

    with ThreadPoolExecutor(callers) as pool:
        for n in range(callers):
            pool.submit(kept_alive if n % 2 == 0 else new_each_time, f"caller-{n}")
        try:
            yield answers
        finally:
            stop.set()


def test_redeploying_past_the_bound_replaces_the_host_and_the_newest_code_answers_throughout(
    client: TestClient, admin: dict[str, str], host: httpx.Client, host_port: int, deploy: Deploy
) -> None:
    before = host_health(client)
    slug = deploy(versioned(0))
    first = served(host, slug).json()
    with calling(host_port, f"/{slug}", 2) as answers:
        version = 0
        while host_health(client)["pid"] == before["pid"]:
            version += 1
            assert version <= 3 * BOUND, host_health(client)
            redeploy(client, admin, slug, {"code": versioned(version)})
            assert until(host, f"/{slug}", lambda r: r.status_code == 200).json()["version"] == version
        until_exited(before["pid"])
        latest = until(host, f"/{slug}", lambda r: r.json()["isolate"] != first["isolate"]).json()
    assert latest["version"] == version

    assert all(answer.startswith("200 ") for _, answer in answers), [a for a in answers if "200" not in a[1]]
    # Each caller sees the versions in order: never an older one after a newer (from the host being replaced).
    for caller in {name for name, _ in answers}:
        seen = [
            int(answer.split('"version":')[1].split(",")[0]) for name, answer in answers if name == caller
        ]
        assert seen == sorted(seen), caller
    isolates = {answer.split('"isolate":"')[1].split('"')[0] for _, answer in answers}
    assert first["isolate"] in isolates and latest["isolate"] in isolates

    after = host_health(client)
    assert after["status"] == "running"
    assert after["pid"] != before["pid"]
    assert after["recycles"] > before["recycles"]
    assert after["replacedVersions"] < BOUND
    messages = [row["message"] for row in function_logs(client, "-")]
    assert any(f"pid {before['pid']} finishes its invocations" in message for message in messages)


def test_invocations_in_flight_during_a_replacement_complete(
    client: TestClient, admin: dict[str, str], host: httpx.Client, host_port: int, deploy: Deploy
) -> None:
    slow = deploy(
        f"{ISOLATE}export default async () => {{ await new Promise((r) => setTimeout(r, 300)); "
        "return new Response(g.isolate); };"
    )
    old_isolate = served(host, slow).text
    before = host_health(client)
    with calling(host_port, f"/{slow}", 6) as answers:
        eventually(lambda: len(answers) >= 6, "no answers")
        redeploy_until(client, admin, lambda h: h["pid"] != before["pid"])
        # Calls go on until the old host has finished what it had accepted and exited.
        until_exited(before["pid"])
        new_isolate = until(host, f"/{slow}", lambda r: r.text != old_isolate).text
    assert [
        answer for _, answer in answers if answer not in (f"200 {old_isolate}", f"200 {new_isolate}")
    ] == []
    assert {f"200 {old_isolate}", f"200 {new_isolate}"} <= {answer for _, answer in answers}
    assert host_health(client)["status"] == "running"

    # Both hosts' invocations are logged (and the few calls of `served` and `until`).
    eventually(
        lambda: len([row for row in function_logs(client, slow) if row["status"] == 200]) >= len(answers),
        "invocations missing from the logs",
    )


@pytest.mark.parametrize(
    ("fresh_host", "why"),
    [
        ("throw new Error('cold start');", "could not load"),
        ("while (true) {}", "stopped answering while loading"),
    ],
    ids=["fails-to-load", "stalls"],
)
def test_a_replacement_that_fails_leaves_the_host_serving_and_is_logged(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy, fresh_host: str, why: str
) -> None:
    # The host loads functions in the order of their slugs: `first` fails in a fresh host, which loads it
    # before `warms` sets what it needs; in this host, `warms` was loaded first.
    key = new_slug("warm")
    warms = deploy(
        f"(globalThis as any)['{key}'] = true;\n{ISOLATE}export default () => new Response(g.isolate);"
    )
    isolate = served(host, warms).text
    first = deploy(
        f"if (!(globalThis as any)['{key}']) {{ {fresh_host} }}\n"
        "export default () => new Response('loaded');",
        slug=f"a-{key}",
    )
    assert served(host, first).text == "loaded"
    before = host_health(client)
    earlier = len(refusals(client))
    try:
        redeploy_until(client, admin, lambda h: h["pid"] != before["pid"] or len(refusals(client)) > earlier)
        after = host_health(client)
        assert (after["pid"], after["recycles"], after["status"]) == (
            before["pid"],
            before["recycles"],
            "running",
        )
        assert host.get(f"/{first}").text == "loaded"
        assert host.get(f"/{warms}").text == isolate
        refusal = refusals(client)[-1]
        assert why in refusal and first in refusal and f"pid {before['pid']}" in refusal
        assert after["draining"] == []
    finally:
        client.delete(f"/api/functions/{first}", headers=admin)  # (the next replacement works again)
