"""Every code format runs the same way on the same server (InsForge issue #1906): the self-hosted CommonJS
form, the cloud `export default` form, `export default { fetch }`, and `Deno.serve(handler)`, with TypeScript
annotations and top-level imports."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.functions.conftest import Deploy

ECHO = (
    "const u = new URL(req.url); return Response.json({method: req.method, path: u.pathname, "
    "q: u.searchParams.get('q'), h: req.headers.get('x-test'), body: await req.text()});"
)

FORMATS = {
    "commonjs": f"module.exports = async function (req) {{ {ECHO} }};",
    "export-default": f"export default async function (req: Request): Promise<Response> {{ {ECHO} }}",
    "export-fetch": f"export default {{ async fetch(req: Request) {{ {ECHO} }} }};",
    "deno-serve": f"Deno.serve(async (req: Request) => {{ {ECHO} }});",
    "deno-serve-options": f"Deno.serve({{ port: 8000 }}, async (req) => {{ {ECHO} }});",
}


@pytest.mark.parametrize("form", sorted(FORMATS))
def test_format_behaves_the_same(client: TestClient, deploy: Deploy, form: str) -> None:
    slug = deploy(FORMATS[form])
    response = client.put(f"/functions/{slug}/a/b?q=1", content=b"payload", headers={"x-test": "yes"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "method": "PUT",
        "path": f"/{slug}/a/b",
        "q": "1",
        "h": "yes",
        "body": "payload",
    }


def test_injected_globals_of_self_hosted_insforge(client: TestClient, deploy: Deploy) -> None:
    code = """
    module.exports = async function (req) {
      const bytes = decodeBase64(encodeBase64("hé"));
      const round = new TextDecoder().decode(bytes);
      return new Response(JSON.stringify({ round, client: typeof createClient }));
    };
    """
    slug = deploy(code)
    assert client.get(f"/functions/{slug}").json() == {"round": "hé", "client": "function"}


def test_npm_import_is_fetched_and_cached(client: TestClient, deploy: Deploy) -> None:
    code = """
    import leftPad from "npm:left-pad@1.3.0";
    export default (req: Request) => new Response(leftPad("7", 3, "0"));
    """
    slug = deploy(code)
    assert client.get(f"/functions/{slug}").text == "007"


def test_unfetchable_import_is_refused_with_the_reason(client: TestClient, admin: dict[str, str]) -> None:
    code = 'import x from "npm:kilnbase-no-such-package-3f9a@1.0.0"; export default () => new Response(x);'
    response = client.post("/api/functions", json={"name": "nopkg", "code": code}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "FUNCTION_CHECK_FAILED"
    assert "kilnbase-no-such-package-3f9a" in response.json()["message"]


def test_code_without_a_handler_is_a_clear_502(client: TestClient, deploy: Deploy) -> None:
    slug = deploy("export const notAHandler = 1;")
    response = client.get(f"/functions/{slug}")
    assert response.status_code == 502
    assert response.json()["error"] == "FUNCTION_LOAD_FAILED"
    assert "No handler found" in response.json()["message"]
