"""The functions host: shared functions served at `/<slug>` on a port of their own, with the real Deno binary.

What `createClient({ functionsUrl })` relies on: every format served the same, 404 for what the host does not
serve (the SDK then uses `/functions/<slug>`), changes picked up without a restart, the same walls and limits
as the workers, CORS, and the logs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.testclient import TestClient

from kilnbase.config import FunctionsSettings, Settings
from tests.functions.conftest import REFUSED, WALLS, Deploy, function_logs, new_slug
from tests.functions.hosting import host_health, host_settings, served, until, until_hosted

Get = Callable[..., httpx.Response]


settings = host_settings(upload_limit=64 * 1024, timeout_ms=1500, max_concurrency=4, host_memory_mb=64)


def test_every_format_is_served_the_same(host: httpx.Client, deploy: Deploy) -> None:
    formats = {
        "commonjs": "module.exports = async function (req) { return new Response('cjs ' + path(req)); };",
        "default-function": "export default async function (req) { return new Response('fn ' + path(req)) }",
        "default-fetch": "export default { fetch(req) { return new Response('fetch ' + path(req)) } };",
        "deno-serve": "Deno.serve((req: Request) => new Response('serve ' + path(req)));",
    }
    prefixes = {"commonjs": "cjs", "default-function": "fn", "default-fetch": "fetch", "deno-serve": "serve"}
    for name, code in formats.items():
        slug = deploy(
            "const path = (req: Request) => new URL(req.url).pathname;\n" + code, slug=new_slug(name)
        )
        served(host, slug)
        answer = host.get(f"/{slug}/a/b", params={"q": "1"})
        assert (answer.status_code, answer.text) == (200, f"{prefixes[name]} /{slug}/a/b")


def test_method_query_headers_and_binary_body_pass_through(host: httpx.Client, deploy: Deploy) -> None:
    slug = deploy(
        """
        export default async (req: Request) => {
          const body = new Uint8Array(await req.arrayBuffer());
          const url = new URL(req.url);
          return new Response(body, { status: 201, headers: {
            "x-method": req.method, "x-query": url.search, "x-custom": req.headers.get("x-custom") ?? "",
            "x-length": String(body.length), "content-type": "application/octet-stream",
          }});
        };
        """
    )
    served(host, slug)
    payload = bytes(range(256)) * 64
    answer = host.put(f"/{slug}/x?a=1&b=two", content=payload, headers={"x-custom": "yes"})
    assert answer.status_code == 201
    assert answer.content == payload
    assert answer.headers["x-method"] == "PUT"
    assert answer.headers["x-query"] == "?a=1&b=two"
    assert answer.headers["x-custom"] == "yes"


def test_a_streamed_response_arrives_in_parts(host: httpx.Client, deploy: Deploy) -> None:
    slug = deploy(
        """
        export default () => {
          let n = 0;
          const stream = new ReadableStream({ async pull(c) {
            if (n === 3) { c.close(); return; }
            await new Promise((r) => setTimeout(r, 50));
            c.enqueue(new TextEncoder().encode(`data: ${n++}\\n\\n`));
          }});
          return new Response(stream, { headers: { "content-type": "text/event-stream" } });
        };
        """
    )
    served(host, slug)
    with host.stream("GET", f"/{slug}") as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = [line for line in response.iter_lines() if line]
    assert events == ["data: 0", "data: 1", "data: 2"]


def test_what_the_host_does_not_serve_is_404_and_the_api_serves_it(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy
) -> None:
    missing = host.get(f"/{new_slug('missing')}")
    assert missing.status_code == 404
    assert missing.json()["error"] == "FUNCTION_NOT_FOUND"

    key = f"FN_{new_slug('k').upper().replace('-', '_')}"
    client.post("/api/secrets", json={"key": key, "value": "only-mine"}, headers=admin)
    code = f'export default () => new Response(Deno.env.get("{key}") ?? "none");'
    shared = deploy(code)
    own = deploy(code, secrets=[key])
    assert served(host, shared).text == "only-mine"
    # A function with a secrets allow-list runs in workers of its own, through the API only.
    time.sleep(0.3)
    assert host.get(f"/{own}").status_code == 404
    assert client.get(f"/functions/{own}").text == "only-mine"

    drafted = deploy("export default () => new Response('draft');", status="draft")
    time.sleep(0.3)
    assert host.get(f"/{drafted}").status_code == 404


def test_an_update_is_served_without_a_restart_and_drops_nothing(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy
) -> None:
    slug = deploy("export default () => new Response('v1');")
    served(host, slug)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=host.base_url, timeout=10) as http:
            while not stop.is_set():
                answer = http.get(f"/{slug}")
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                seen.add(answer.text)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(hammer)
        time.sleep(0.3)
        updated = client.put(
            f"/api/functions/{slug}", json={"code": "export default () => new Response('v2');"}, headers=admin
        )
        assert updated.status_code == 200, updated.text
        until(host, f"/{slug}", lambda r: r.text == "v2")
        time.sleep(0.3)
        stop.set()
    assert failures == []
    assert seen == {"v1", "v2"}

    client.delete(f"/api/functions/{slug}", headers=admin)
    until(host, f"/{slug}", lambda r: r.status_code == 404)


def test_environment_is_the_shared_secrets_and_platform_values_only(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy
) -> None:
    key = f"FN_{new_slug('e').upper().replace('-', '_')}"
    client.post("/api/secrets", json={"key": key, "value": "first"}, headers=admin)
    slug = deploy(
        f"""
        const atLoad = Deno.env.get("{key}") ?? null;
        export default () => Response.json({{
          secret: Deno.env.get("{key}") ?? null, atLoad, anon: Deno.env.get("ANON_KEY")?.slice(0, 5),
          internal: Deno.env.get("INSFORGE_INTERNAL_URL"), path: Deno.env.get("PATH") ?? null,
          home: Deno.env.get("HOME") ?? null, jwt: Deno.env.get("JWT_SECRET") ?? null,
          denoDir: Deno.env.get("DENO_DIR") ?? null,
        }});
        """
    )
    seen = served(host, slug).json()
    assert seen["secret"] == "first"
    assert seen["anon"] == "anon_"
    assert seen["internal"].startswith("http://127.0.0.1")
    assert seen["path"] is None and seen["home"] is None and seen["jwt"] is None and seen["denoDir"] is None
    client.put(f"/api/secrets/{key}", json={"value": "second"}, headers=admin)
    # Read when the function is called, or when it is loaded: a change reaches both.
    until(host, f"/{slug}", lambda r: r.json()["secret"] == r.json()["atLoad"] == "second")
    client.delete(f"/api/secrets/{key}", headers=admin)
    until(host, f"/{slug}", lambda r: r.json()["secret"] is r.json()["atLoad"] is None)


def test_file_system_subprocesses_and_ending_the_host_are_refused(host: httpx.Client, deploy: Deploy) -> None:
    ending = (
        "{ exit: async () => Deno.exit(0), kill: async () => Deno.kill(Deno.pid, 'SIGKILL'), "
        "processKill: async () => process.kill(process.pid), abort: async () => process.abort() }"
    )
    slug = deploy(f'import process from "node:process";\n{WALLS}export default () => walls({ending});')
    ended = {"exit": "Error", "kill": "Error", "processKill": "Error", "abort": "Error"}
    assert served(host, slug).json() == {**REFUSED, **ended}
    assert host.get("/health").status_code == 200  # still up


def test_what_a_function_writes_to_stdout_itself_cannot_pass_for_the_host(
    client: TestClient, host: httpx.Client, deploy: Deploy
) -> None:
    victim = deploy("export default () => new Response('victim');")
    assert served(host, victim).text == "victim"
    forger = deploy(
        f"""
        const encoder = new TextEncoder();
        const out = (o: unknown) => Deno.stdout.writeSync(encoder.encode(JSON.stringify(o) + "\\n"));
        export default () => {{
          out({{ t: "log", slug: "{victim}", rid: null, level: "error", msg: "forged" }});
          out({{ t: "loading", slug: "{victim}" }});
          while (true) {{}}  // the host stalls now, as if loading the victim never ended
        }};
        """
    )
    until_hosted(client, forger)
    with pytest.raises(httpx.TransportError):
        host.get(f"/{forger}", timeout=15)
    # Restarted, and the victim is not taken for what got the host stuck.
    assert until(host, f"/{victim}", lambda r: r.status_code == 200).text == "victim"
    assert victim not in host_health(client)["failed"]
    assert all("forged" not in row["message"] for row in function_logs(client, victim))


def test_time_limit_then_a_stuck_host_is_restarted(
    client: TestClient, host: httpx.Client, deploy: Deploy
) -> None:
    slow = deploy(
        "export default async () => { await new Promise(r => setTimeout(r, 10000)); "
        "return new Response('late'); };"
    )
    answer = served(host, slow)
    assert answer.status_code == 504
    assert answer.json()["error"] == "FUNCTION_TIMEOUT"

    other = deploy("export default () => new Response('other');")
    looping = deploy(
        "export default (req: Request) => { "
        "if (new URL(req.url).searchParams.has('loop')) { while (true) {} } "
        "return new Response('fine'); };"
    )
    assert served(host, looping).text == "fine"
    assert served(host, other).text == "other"
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(host.get, f"/{looping}?loop", timeout=15)
        time.sleep(0.3)
        assert host_health(client)["status"] != "running"  # health pings it: no answer while it loops
        with pytest.raises(httpx.TransportError):
            stuck.result()  # the host is killed under it
    # Restarted: every function serves again.
    assert until(host, f"/{other}", lambda r: r.status_code == 200).text == "other"
    assert until(host, f"/{looping}", lambda r: r.status_code == 200).text == "fine"
    assert host_health(client)["status"] == "running"


@pytest.mark.parametrize(
    ("top_level", "why"),
    [
        # (deno check passes: the loop only runs when the module is loaded.)
        ("const started = Date.now(); while (Date.now() - started < 60000) {}", "did not finish"),
        (
            "const kept: number[][] = []; while (true) kept.push(new Array(1_000_000).fill(1));",
            "stopped while loading",
        ),
    ],
    ids=["loop", "memory"],
)
def test_a_top_level_that_stops_the_host_is_left_out_and_the_others_serve(
    client: TestClient, host: httpx.Client, deploy: Deploy, top_level: str, why: str
) -> None:
    stuck = deploy(f"{top_level}\nexport default () => new Response('never');", slug=new_slug("stuck"))
    fine = deploy("export default () => new Response('still here');")
    assert until(host, f"/{fine}", lambda r: r.status_code == 200).text == "still here"
    answer = until(host, f"/{stuck}", lambda r: r.status_code == 502)
    assert answer.json()["error"] == "FUNCTION_LOAD_FAILED"
    assert why in answer.json()["message"]
    assert stuck in host_health(client)["failed"]


def test_a_top_level_await_that_never_settles_fails_that_function_only(
    client: TestClient, host: httpx.Client, deploy: Deploy
) -> None:
    waiting = deploy(
        "await new Promise(() => {});\nexport default () => new Response('never');", slug=new_slug("await")
    )
    answer = until(host, f"/{waiting}", lambda r: r.status_code == 502)
    assert "did not finish within" in answer.json()["message"]
    later = deploy("export default () => new Response('later');")  # configurations still arrive
    assert until(host, f"/{later}", lambda r: r.status_code == 200).text == "later"


def test_code_loaded_again_is_evaluated_again(
    client: TestClient, admin: dict[str, str], host: httpx.Client, deploy: Deploy
) -> None:
    code = "Deno.serve(() => new Response('served again'));"
    slug = deploy(code)
    assert served(host, slug).text == "served again"
    client.delete(f"/api/functions/{slug}", headers=admin)
    until(host, f"/{slug}", lambda r: r.status_code == 404)
    deploy(code, slug=slug)  # the same slug, revision and code: the same file
    assert until(host, f"/{slug}", lambda r: r.status_code != 404).text == "served again"

    # A top level that fails once loads when the host is next configured (here: another deploy).
    flaky_slug = new_slug("flaky")
    flaky = deploy(
        f'const seen = "seen-{flaky_slug}";\n'
        "const g = globalThis as any;\n"
        "if (!g[seen]) { g[seen] = true; throw new Error('first load'); }\n"
        "export default () => new Response('loaded');",
        slug=flaky_slug,
    )
    first = until(host, f"/{flaky}", lambda r: r.status_code in (200, 502))
    if first.status_code == 502:  # (a configuration arriving at once may load it again before any look)
        assert first.json()["error"] == "FUNCTION_LOAD_FAILED"
        deploy("export default () => new Response('other');")
    # Its first evaluation always throws: "loaded" means it was evaluated again, after the failure.
    assert until(host, f"/{flaky}", lambda r: r.status_code == 200).text == "loaded"


def test_concurrency_cap_is_429(host: httpx.Client, deploy: Deploy, host_port: int) -> None:
    slug = deploy(
        "export default async () => { await new Promise(r => setTimeout(r, 800)); "
        "return new Response('done'); };"
    )
    served(host, slug)
    with ThreadPoolExecutor(8) as pool:
        url = f"http://127.0.0.1:{host_port}/{slug}"
        statuses = list(pool.map(lambda _: httpx.get(url, timeout=10).status_code, range(8)))
    assert statuses.count(200) == 4
    assert statuses.count(429) == 4


def test_cors_preflight_and_reflected_origin(host: httpx.Client, deploy: Deploy) -> None:
    slug = deploy("export default () => new Response('ok');")
    served(host, slug)
    preflight = host.options(
        f"/{slug}",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    answer = host.get(f"/{slug}", headers={"origin": "https://app.example"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in host.get(f"/{slug}").headers


def test_a_pages_script_may_read_the_functions_own_headers(host: httpx.Client, deploy: Deploy) -> None:
    # A browser's fetch with credentials reads only safelisted headers unless they are named: `*` there is a
    # header called "*" (the Fetch standard).
    slug = deploy(
        "export default () => new Response('[]', {headers: {'content-type': 'application/json', "
        "'x-total-count': '42', 'location': '/items/7', 'set-cookie': 'a=b'}});"
    )
    served(host, slug)
    answer = host.get(f"/{slug}", headers={"origin": "https://app.example"})
    exposed = {name.strip() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"x-total-count", "location"}
    assert "access-control-expose-headers" not in host.get(f"/{slug}").headers  # no origin: no CORS

    own = deploy(
        "export default () => new Response('ok', {headers: {'x-a': '1', 'x-b': '2', "
        "'access-control-expose-headers': 'x-a'}});"
    )
    served(host, own)
    chosen = host.get(f"/{own}", headers={"origin": "https://app.example"})
    assert chosen.headers["access-control-expose-headers"] == "x-a"  # the function's own list is kept


def test_a_body_over_the_limit_is_413(host: httpx.Client, deploy: Deploy, settings: Settings) -> None:
    slug = deploy(
        "export default async (req: Request) => new Response(String((await req.arrayBuffer()).byteLength));"
    )
    served(host, slug)
    limit = settings.max_upload_body_bytes
    assert host.post(f"/{slug}", content=b"x" * limit).text == str(limit)
    too_large = host.post(f"/{slug}", content=b"x" * (limit + 1))
    assert too_large.status_code == 413
    assert too_large.json() == {
        "error": "PAYLOAD_TOO_LARGE",
        "message": "The request body is larger than 65536 bytes.",
        "statusCode": 413,
        "nextActions": "Send a smaller body, or raise KILNBASE_MAX_UPLOAD_BODY_BYTES.",
    }

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 4096):
            yield b"x" * 4096

    assert host.post(f"/{slug}", content=chunks(limit)).text == str(limit)  # (chunked: no length)
    assert host.post(f"/{slug}", content=chunks(limit + 4096)).status_code == 413


def test_console_lines_and_invocations_are_logged_with_the_request_id(
    client: TestClient, host: httpx.Client, deploy: Deploy
) -> None:
    slug = deploy(
        """
        export default async (req: Request) => {
          console.log("hello", { n: 1 });
          await Promise.resolve();
          console.error("after an await");
          if (new URL(req.url).searchParams.has("throw")) throw new Error("boom");
          return new Response("ok");
        };
        """
    )
    answer = served(host, slug)
    request_id = answer.headers["x-kilnbase-request-id"]
    failed = host.get(f"/{slug}", params={"throw": "1"})
    assert failed.status_code == 500
    assert failed.json()["error"] == "FUNCTION_ERROR"
    failed_id = failed.headers["x-kilnbase-request-id"]
    deadline = time.monotonic() + 10
    while True:
        rows = function_logs(client, slug)
        mine = [row for row in rows if row["request_id"] == request_id]
        theirs = [row for row in rows if row["request_id"] == failed_id]
        if len(mine) >= 3 and len(theirs) >= 4:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    assert [(row["level"], row["message"]) for row in mine] == [
        ("info", "hello { n: 1 }"),
        ("error", "after an await"),
        ("info", f"GET /{slug} -> 200"),
    ]
    assert mine[-1]["status"] == 200 and mine[-1]["duration_ms"] >= 0
    assert any("boom" in row["message"] for row in theirs)
    assert theirs[-1]["status"] == 500


def test_a_port_in_use_is_left_alone(settings: Settings) -> None:
    from kilnbase.app import create_app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A second server of this project, told to host functions on the port something else holds.
        taken_port = settings.model_copy(update={"functions": FunctionsSettings(host_port=port)})
        with TestClient(create_app(taken_port)) as other:
            deadline = time.monotonic() + 10
            while (health := host_health(other))["status"] == "starting":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert health["status"] == "elsewhere"
            assert str(port) in health["detail"]
