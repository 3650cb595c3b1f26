"""A function an agent key deployed, or changed last, may not reach private networks (loopback but for the
address functions call the API at, RFC 1918, CGNAT, link-local), as a schedule an agent set may not; an
admin-deployed one may, and an admin deploying the agent's function again lifts the wall. Agent-deployed
functions never run in the shared functions host, whose one Deno process has one deny list."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

import kilnbase.db
from kilnbase.config import Settings
from kilnbase.functions.egress import private_networks
from tests.functions.conftest import deno_starts_with, new_slug
from tests.functions.hosting import host_health, host_settings, served
from tests.support.app import agent_headers

settings = host_settings()

#: The migration's marking of functions deployed before the column, from the audit trail.
BACKFILL = (
    "UPDATE"
    + (Path(kilnbase.db.__file__).parent / "migrations" / "0340_functions_deployed_by_agent.sql")
    .read_text()
    .split("\nUPDATE", 1)[1]
)

#: Fetches each URL of the request's body; answers each one's text, or the error's name (`NotCapable`:
#: Deno's permissions refused the connection before any packet went).
FETCH = """
export default async (req: Request) => {
  const out: Record<string, string> = {};
  for (const url of await req.json()) {
    try { out[url] = await (await fetch(url)).text(); } catch (e) { out[url] = e.name; }
  }
  return Response.json(out);
};
"""


class _Named(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(self.connection.getsockname()[0]).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def urls() -> Iterator[tuple[str, str]]:
    """An HTTP server on a private address (127.0.0.2: loopback, not where the API is called) and one on
    the address functions call the API at (127.0.0.1); each answers its own address."""
    servers = [ThreadingHTTPServer((address, 0), _Named) for address in ("127.0.0.2", "127.0.0.1")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    private, own = ("http://{}:{}/".format(*s.socket.getsockname()) for s in servers)
    yield private, own
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def agent(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """An agent key that deploys functions seeing every secret (so the host would serve them)."""
    return agent_headers(client, admin, ["functions:write", "secrets:read"], "deployer")


def _deploy(client: TestClient, headers: dict[str, str]) -> str:
    slug = new_slug("reach")
    created = client.post("/api/functions", headers=headers, json={"name": slug, "slug": slug, "code": FETCH})
    assert created.status_code == 201, created.text
    return slug


def _reached(client: TestClient, admin: dict[str, str], slug: str, urls: tuple[str, str]) -> Any:
    answer = client.post(f"/functions/{slug}", headers=admin, json=list(urls))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _by_agent(client: TestClient, admin: dict[str, str], slug: str) -> Any:
    return client.get(f"/api/functions/{slug}", headers=admin).json()["deployedByAgent"]


def test_an_agent_deployed_function_cannot_reach_a_private_address_an_admin_one_can(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], urls: tuple[str, str]
) -> None:
    private, own = urls
    by_agent = _deploy(client, agent)
    assert _reached(client, admin, by_agent, urls) == {private: "NotCapable", own: "127.0.0.1"}
    assert _by_agent(client, admin, by_agent) is True
    by_admin = _deploy(client, admin)
    assert _reached(client, admin, by_admin, urls) == {private: "127.0.0.2", own: "127.0.0.1"}
    assert _by_agent(client, admin, by_admin) is False


def test_an_admin_redeploy_lifts_the_wall_and_an_agent_change_sets_it(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], urls: tuple[str, str]
) -> None:
    private, _own = urls
    slug = _deploy(client, agent)
    renamed = client.put(f"/api/functions/{slug}", headers=admin, json={"name": "renamed"})
    assert renamed.status_code == 200, renamed.text
    assert _reached(client, admin, slug, urls)[private] == "NotCapable", "a rename is not a deploy"
    redeployed = client.put(f"/api/functions/{slug}", headers=admin, json={"code": FETCH})
    assert redeployed.status_code == 200 and redeployed.json()["function"]["deployedByAgent"] is False
    assert _reached(client, admin, slug, urls)[private] == "127.0.0.2"
    changed = client.put(f"/api/functions/{slug}", headers=agent, json={"description": "mine now"})
    assert changed.status_code == 200 and changed.json()["function"]["deployedByAgent"] is True
    assert _reached(client, admin, slug, urls)[private] == "NotCapable"


def test_the_functions_host_does_not_serve_an_agent_deployed_function(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], host: httpx.Client
) -> None:
    by_agent = _deploy(client, agent)
    by_admin = _deploy(client, admin)
    served(host, by_admin)
    assert by_agent not in host_health(client)["served"]
    assert host.get(f"/{by_agent}").status_code == 404
    assert client.post(f"/functions/{by_agent}", headers=admin, json=[]).json() == {}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::1"])
def test_the_private_deny_list_is_one_deno_starts_with(host: str, tmp_path: Path) -> None:
    """Every agent function would fail if Deno refused the list; the address the API is called at is left
    out of the ranges."""
    entries = private_networks(Settings(host=host, database_url="postgresql://localhost/kilnbase"))
    deno_starts_with(entries, tmp_path)
    assert ("127.0.0.0/8" in entries) == (host != "0.0.0.0")
    assert ("10.0.0.0/8" in entries) == (host != "10.1.2.3")
    assert ("[::1]" in entries) == (host != "::1")


def test_functions_deployed_before_the_mark_existed_are_marked_from_the_audit_trail(
    client: TestClient, admin: dict[str, str], agent: dict[str, str], database_url: str
) -> None:
    """Migration 0340 marks a function whose latest deploy (or agent change) the audit trail gives to an
    agent key; an admin's rename does not count as a deploy, an admin's new code does."""
    by_agent, by_admin, renamed, redeployed = (_deploy(client, h) for h in (agent, admin, agent, agent))
    assert client.put(f"/api/functions/{renamed}", headers=admin, json={"name": "n"}).status_code == 200
    assert client.put(f"/api/functions/{redeployed}", headers=admin, json={"code": FETCH}).status_code == 200
    slugs = [by_agent, by_admin, renamed, redeployed]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "update functions.definitions set deployed_by_agent = false where slug = any(%s)", (slugs,)
        )
        conn.execute(BACKFILL)
        marked: dict[str, bool] = dict(
            conn.execute(
                "select slug, deployed_by_agent from functions.definitions where slug = any(%s)", (slugs,)
            ).fetchall()
        )
    assert marked == {by_agent: True, by_admin: False, renamed: True, redeployed: False}
