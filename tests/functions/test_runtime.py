"""The runtime's walls and limits with the real Deno binary: permissions, environment, time limit, memory
cap, crashes, concurrency cap, and reloads that drop nothing."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.testclient import TestClient

from tests.functions.conftest import REFUSED, WALLS, Deploy, new_slug


def test_file_system_and_subprocesses_are_refused(client: TestClient, deploy: Deploy) -> None:
    code = WALLS + 'export default () => walls({ keys: () => Deno.readTextFile(Deno.cwd() + "/keys.json") });'
    result = client.get(f"/functions/{deploy(code)}").json()
    assert result == {**REFUSED, "keys": "NotCapable"}


def test_environment_is_the_secrets_and_platform_values_only(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    key, hidden = (
        f"FN_{new_slug('k').upper().replace('-', '_')}",
        f"FN_{new_slug('h').upper().replace('-', '_')}",
    )
    client.post("/api/secrets", json={"key": key, "value": "visible"}, headers=admin)
    client.post("/api/secrets", json={"key": hidden, "value": "other"}, headers=admin)
    code = f"""
    export default () => Response.json({{
      secret: Deno.env.get("{key}"), hidden: Deno.env.get("{hidden}") ?? null,
      base: Deno.env.get("INSFORGE_BASE_URL"), internal: Deno.env.get("INSFORGE_INTERNAL_URL"),
      anon: Deno.env.get("ANON_KEY")?.slice(0, 5), path: Deno.env.get("PATH") ?? null,
      home: Deno.env.get("HOME") ?? null, jwt: Deno.env.get("JWT_SECRET") ?? null,
      denoDir: Deno.env.get("DENO_DIR") ?? null, names: Object.keys(Deno.env.toObject()).sort(),
    }});
    """
    everything = client.get(f"/functions/{deploy(code)}").json()
    assert everything["secret"] == "visible"
    assert everything["hidden"] == "other"  # no allow-list: every active secret, as InsForge does
    assert everything["anon"] == "anon_"
    assert everything["base"].startswith("http")
    assert everything["internal"].startswith("http://127.0.0.1")
    assert everything["path"] is None and everything["home"] is None
    assert everything["jwt"] is None and everything["denoDir"] is None

    limited = client.get(f"/functions/{deploy(code, secrets=[key])}").json()
    assert limited["secret"] == "visible"
    assert limited["hidden"] is None
    assert limited["names"] == sorted([key, "ANON_KEY", "INSFORGE_BASE_URL", "INSFORGE_INTERNAL_URL"])


def test_secret_values_are_not_in_any_process_arguments(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    """Every user of the machine can read a process's arguments (/proc/<pid>/cmdline); only its own user
    its environment. A worker gets its secrets the second way, in the sandbox or not."""
    key = f"FN_{new_slug('a').upper().replace('-', '_')}"
    value = f"argv-probe-{secrets.token_hex(12)}"
    client.post("/api/secrets", json={"key": key, "value": value}, headers=admin)
    slug = deploy(f'export default () => new Response(Deno.env.get("{key}") ?? "none");', secrets=[key])
    assert client.get(f"/functions/{slug}").text == value  # a worker holding it runs now
    sandboxed = client.get("/api/functions", headers=admin).json()["runtime"]["sandbox"]["enabled"]
    seen = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes()
        except OSError:  # a process that ended meanwhile
            continue
        if value.encode() in arguments:
            seen.append(arguments.split(b"\0")[0].decode(errors="replace"))
    assert seen == [], f"secret in the arguments of {seen} (sandbox enabled: {sandboxed})"


def test_a_changed_secret_reaches_warm_workers(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    key = f"FN_{new_slug('s').upper().replace('-', '_')}"
    client.post("/api/secrets", json={"key": key, "value": "first"}, headers=admin)
    slug = deploy(f'export default () => new Response(Deno.env.get("{key}") ?? "none");')
    assert client.get(f"/functions/{slug}").text == "first"
    client.put(f"/api/secrets/{key}", json={"value": "second"}, headers=admin)
    deadline = time.monotonic() + 10
    while client.get(f"/functions/{slug}").text != "second":  # the change arrives through NOTIFY
        assert time.monotonic() < deadline
    # The new workers keep serving once the old ones (same version, other secrets) have stopped.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        answer = client.get(f"/functions/{slug}")
        assert (answer.status_code, answer.text) == (200, "second")
        time.sleep(0.05)
    client.delete(f"/api/secrets/{key}", headers=admin)
    deadline = time.monotonic() + 10
    while client.get(f"/functions/{slug}").text != "none":
        assert time.monotonic() < deadline


def test_time_limit_and_infinite_loop(client: TestClient, deploy: Deploy) -> None:
    slow = deploy(
        "export default async () => { await new Promise(r => setTimeout(r, 10000)); "
        "return new Response('late'); };"
    )
    response = client.get(f"/functions/{slow}")
    assert response.status_code == 504
    assert response.json()["error"] == "FUNCTION_TIMEOUT"

    looping = deploy(
        "export default (req: Request) => { "
        "if (new URL(req.url).searchParams.has('loop')) { while (true) {} } "
        "return new Response('fine'); };"
    )
    assert client.get(f"/functions/{looping}").text == "fine"
    started = time.monotonic()
    assert client.get(f"/functions/{looping}?loop").status_code == 504
    assert time.monotonic() - started < 6
    # The stuck worker is killed and replaced: the function serves again.
    deadline = time.monotonic() + 20
    while (answer := client.get(f"/functions/{looping}")).status_code != 200:
        assert answer.status_code in (502, 503, 504)
        assert time.monotonic() < deadline
    assert answer.text == "fine"


def test_memory_cap_and_crash_are_a_clear_5xx_then_replaced(client: TestClient, deploy: Deploy) -> None:
    code = """
    const hog: unknown[] = [];
    export default (req: Request) => {
      const what = new URL(req.url).searchParams.get("do");
      if (what === "exit") Deno.exit(7);
      if (what === "hog") { while (true) hog.push(new Array(1e6).fill(Math.random())); }
      return new Response("alive");
    };
    """
    slug = deploy(code)
    assert client.get(f"/functions/{slug}").text == "alive"
    crashed = client.get(f"/functions/{slug}?do=exit")
    assert crashed.status_code == 502
    assert crashed.json()["error"] == "FUNCTION_CRASHED"
    deadline = time.monotonic() + 20
    while client.get(f"/functions/{slug}").status_code != 200:
        assert time.monotonic() < deadline
    hog = client.get(f"/functions/{slug}?do=hog")
    assert hog.status_code in (502, 504)
    deadline = time.monotonic() + 20
    while client.get(f"/functions/{slug}").status_code != 200:
        assert time.monotonic() < deadline


def test_concurrency_cap_is_429(client: TestClient, deploy: Deploy) -> None:
    slug = deploy(
        "export default async () => { await new Promise(r => setTimeout(r, 1500)); "
        "return new Response('ok'); };"
    )
    assert client.get(f"/functions/{slug}").status_code == 200  # warm
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: client.get(f"/functions/{slug}").status_code, range(8)))
    assert statuses.count(200) == 4  # max_concurrency in these tests
    assert statuses.count(429) == 4


def test_hot_reload_under_load_drops_nothing(
    client: TestClient, admin: dict[str, str], deploy: Deploy
) -> None:
    slug = deploy(
        "export default async () => { await new Promise(r => setTimeout(r, 50)); "
        "return new Response('v1'); };"
    )
    assert client.get(f"/functions/{slug}").text == "v1"
    stop = threading.Event()
    seen: list[tuple[int, str]] = []

    def hammer() -> None:
        while not stop.is_set():
            response = client.get(f"/functions/{slug}")
            seen.append((response.status_code, response.text))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for version in ("v2", "v3"):
        code = (
            "export default async () => { await new Promise(r => setTimeout(r, 50)); "
            "return new Response('%s'); };"
        )
        assert (
            client.put(f"/api/functions/{slug}", json={"code": code % version}, headers=admin).status_code
            == 200
        )
        deadline = time.monotonic() + 15
        while not any(text == version for _, text in seen[-5:]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen
    assert {status for status, _ in seen} == {200}
    assert {text for _, text in seen} <= {"v1", "v2", "v3"}
