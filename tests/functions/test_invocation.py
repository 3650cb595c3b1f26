"""What reaches a function and what comes back: raw binary and multipart bodies, streamed responses, CORS,
and the logs each invocation leaves in `functions.logs`."""

from __future__ import annotations

import os

from starlette.testclient import TestClient

from tests.functions.conftest import Deploy, function_logs


def test_binary_body_round_trips(client: TestClient, deploy: Deploy) -> None:
    slug = deploy(
        "export default async (req: Request) => "
        "new Response(new Uint8Array(await req.arrayBuffer()).reverse(), "
        "{ headers: { 'content-type': 'application/octet-stream' } });"
    )
    payload = os.urandom(300_000)
    response = client.post(
        f"/functions/{slug}", content=payload, headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 200
    assert response.content == payload[::-1]


def test_multipart_form_arrives_intact(client: TestClient, deploy: Deploy) -> None:
    code = """
    export default async (req: Request) => {
      const form = await req.formData();
      const file = form.get("file") as File;
      const bytes = new Uint8Array(await file.arrayBuffer());
      return Response.json({ field: form.get("field"), name: file.name, size: bytes.length,
                             first: bytes[0], last: bytes[bytes.length - 1] });
    };
    """
    slug = deploy(code)
    data = bytes([0, 255]) * 5000
    response = client.post(
        f"/functions/{slug}", data={"field": "value"}, files={"file": ("pic.bin", data, "image/png")}
    )
    assert response.json() == {"field": "value", "name": "pic.bin", "size": 10000, "first": 0, "last": 255}


def test_server_sent_events_stream(client: TestClient, deploy: Deploy) -> None:
    code = """
    export default () => {
      const encoder = new TextEncoder();
      const body = new ReadableStream({
        async start(controller) {
          for (let i = 0; i < 3; i++) {
            controller.enqueue(encoder.encode(`data: ${i}\\n\\n`));
            await new Promise(r => setTimeout(r, 20));
          }
          controller.close();
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    };
    """
    slug = deploy(code)
    with client.stream("GET", f"/functions/{slug}") as response:
        assert response.headers["content-type"] == "text/event-stream"
        text = "".join(response.iter_text())
    assert text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_status_headers_and_cors(client: TestClient, deploy: Deploy) -> None:
    slug = deploy(
        "export default () => new Response('made', { status: 201, headers: { 'x-custom': 'yes', "
        "'set-cookie': 'a=1' } });"
    )
    response = client.post(f"/functions/{slug}", headers={"origin": "https://app.example"})
    assert response.status_code == 201
    assert response.headers["x-custom"] == "yes"
    assert response.headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert response.headers["x-kilnbase-request-id"]
    preflight = client.options(
        f"/functions/{slug}",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_console_output_errors_and_invocations_are_logged(client: TestClient, deploy: Deploy) -> None:
    code = """
    export default (req: Request) => {
      console.log("hello from", new URL(req.url).pathname);
      console.warn({ careful: true });
      if (new URL(req.url).searchParams.has("fail")) throw new Error("kaboom");
      return new Response("ok");
    };
    """
    slug = deploy(code)
    ok = client.get(f"/functions/{slug}/path")
    failed = client.get(f"/functions/{slug}?fail")
    assert failed.status_code == 500
    assert failed.json()["message"] == "kaboom"
    rows = function_logs(client, slug)
    ok_id = ok.headers["x-kilnbase-request-id"]
    mine = [row for row in rows if row["request_id"] == ok_id]
    assert {"level": "info", "message": f"hello from /{slug}/path"}.items() <= mine[0].items()
    assert mine[1]["level"] == "warn" and "careful" in mine[1]["message"]
    summary = mine[-1]
    assert summary["status"] == 200 and summary["duration_ms"] > 0
    assert summary["message"] == f"GET /{slug}/path -> 200"
    failed_rows = [row for row in rows if row["request_id"] == failed.headers["x-kilnbase-request-id"]]
    assert any(row["level"] == "error" and "kaboom" in row["message"] for row in failed_rows)
    assert failed_rows[-1]["status"] == 500


def test_the_function_sees_the_path_as_the_client_encoded_it(client: TestClient, deploy: Deploy) -> None:
    """Not decoded on the way: an encoded slash stays in its segment, and bytes that decode to no Latin-1
    character (`%FF`) or to NUL (`%00`) reach the function as sent, instead of a 500 or the worker's bare
    400."""
    slug = deploy("export default (req: Request) => new Response(new URL(req.url).pathname);")
    for rest in ("a%2Fb", "%FF", "x%00y", "caf%C3%A9"):
        response = client.get(f"/functions/{slug}/{rest}")
        assert response.status_code == 200, (rest, response.text)
        assert response.text == f"/{slug}/{rest}"
