"""Where the server keeps its data is nobody's business but the operator's: no page or answer an
unauthenticated caller can read names the data directory (the CLI, run on the server, knows it)."""

from __future__ import annotations

import secrets

from starlette.testclient import TestClient

from kilnbase.config import Settings


def _data_dir_named_in(text: str, settings: Settings) -> bool:
    return str(settings.data_dir) in text or str(settings.data_dir.resolve()) in text


def test_public_pages_do_not_name_the_data_directory(client: TestClient, settings: Settings) -> None:
    for path in ("/dashboard", "/api/health"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert not _data_dir_named_in(response.text, settings), path
    assert "kilnbase keys" in client.get("/dashboard").text  # the way to the keys is still shown


def test_a_function_that_fails_to_load_does_not_show_its_path(
    client: TestClient, admin: dict[str, str], anon: dict[str, str], settings: Settings
) -> None:
    slug = f"broken-{secrets.token_hex(4)}"
    code = "throw new Error('boom at load'); export default () => new Response('never');"
    deployed = client.post("/api/functions", json={"name": slug, "slug": slug, "code": code}, headers=admin)
    assert deployed.status_code == 201, deployed.text
    response = client.get(f"/functions/{slug}", headers=anon)
    assert response.status_code == 502
    message = response.json()["message"]
    assert "boom at load" in message and "index.ts:1" in message  # still says what and where
    assert not _data_dir_named_in(message, settings) and "file://" not in message
