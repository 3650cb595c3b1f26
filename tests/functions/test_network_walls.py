"""What a function may not reach over the network, in a worker and in the functions host alike: the cloud's
metadata service, Kilnbase's own Postgres and Redis on every local address and name, and what the operator
lists in `KILNBASE_FUNCTIONS_DENY_NET`; anything else stays reachable, other local ports included."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from kilnbase.config import FunctionsSettings, Settings
from kilnbase.functions.egress import denied_hosts
from tests.functions.conftest import Deploy, deno_starts_with
from tests.functions.hosting import served

#: Tries a TCP connection to each `host:port` of the request's body; answers what happened to each:
#: "connected", or the error's name (`NotCapable`: Deno's permissions refused it before any packet went).
PROBE = """
export default async (req: Request) => {
  const out: Record<string, string> = {};
  for (const target of await req.json()) {
    const at = target.lastIndexOf(":");
    try {
      const conn = await Deno.connect({ hostname: target.slice(0, at).replace(/^\\[|\\]$/g, ""),
                                        port: Number(target.slice(at + 1)) });
      conn.close();
      out[target] = "connected";
    } catch (e) { out[target] = e.name; }
  }
  try { await fetch("http://169.254.169.254/latest/meta-data/"); out.metadata = "fetched"; }
  catch (e) { out.metadata = e.name; }
  return Response.json(out);
};
"""
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[int, int]]:
    """Two local ports that accept connections: the first listed in the operator's deny list, the second
    not (it shows that the rest of loopback is left alone)."""
    sockets = []
    for _ in range(2):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        sockets.append(server)
    yield sockets[0].getsockname()[1], sockets[1].getsockname()[1]
    for server in sockets:
        server.close()


@pytest.fixture(scope="module")
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, listeners: tuple[int, int], host_port: int
) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        rate_limit_redis_url=REDIS,
        functions=FunctionsSettings(
            workers_per_function=1,
            memory_mb=64,
            host_port=host_port,
            deny_net=f"127.0.0.0/8:{listeners[0]}",
        ),
    )


def _targets(database_url: str, listeners: tuple[int, int]) -> dict[str, str]:
    port = psycopg.conninfo.conninfo_to_dict(database_url).get("port") or "5432"
    denied, open_port = listeners
    return {
        f"127.0.0.1:{port}": "NotCapable",
        f"localhost:{port}": "NotCapable",
        f"127.0.0.2:{port}": "NotCapable",
        "127.0.0.1:6379": "NotCapable",
        "[::1]:6379": "NotCapable",
        f"127.0.0.1:{denied}": "NotCapable",
        f"127.0.0.1:{open_port}": "connected",
    }


def _answers(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_a_worker_reaches_neither_the_database_nor_redis_nor_the_metadata_service(
    client: TestClient, deploy: Deploy, admin: dict[str, str], database_url: str, listeners: tuple[int, int]
) -> None:
    targets = _targets(database_url, listeners)
    slug = deploy(PROBE)
    answers = _answers(client.post(f"/functions/{slug}", json=list(targets), headers=admin))
    assert answers == {**targets, "metadata": "NotCapable"}


def test_the_host_has_the_same_walls(
    client: TestClient, deploy: Deploy, database_url: str, listeners: tuple[int, int], host_port: int
) -> None:
    targets = _targets(database_url, listeners)
    slug = deploy(PROBE)
    with httpx.Client(base_url=f"http://127.0.0.1:{host_port}", timeout=20) as host:
        served(host, slug)
        answers = _answers(host.post(f"/{slug}", json=list(targets)))
    assert answers == {**targets, "metadata": "NotCapable"}


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("fc00::/7", "no IPv6 range"),
        ("::1", "in brackets: [::1]"),
        ("10.0.0.0/33", "IPv4 CIDR"),
        ("db.internal:99999", "from 1 to 65535"),
        ("two words", "not an address"),
        ("[::1]5432", "optional :port"),
    ],
)
def test_a_deny_list_deno_would_refuse_is_refused_at_start_saying_how_to_write_it(
    entry: str, says: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        FunctionsSettings(deny_net=f"10.0.0.0/8,{entry}")
    assert says in str(raised.value)


def test_a_deny_list_in_the_environment_is_read_entry_by_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILNBASE_FUNCTIONS_DENY_NET", " 10.0.0.0/8, [fd00::1]:443 ,,db.internal ")
    assert FunctionsSettings().deny_net == ("10.0.0.0/8", "[fd00::1]:443", "db.internal")


@pytest.mark.parametrize(
    ("conninfo", "denies"),
    [
        # (libpq: a host starting with @ is a Unix socket in the abstract namespace)
        ("host=@kilnbase port=5432 dbname=kilnbase", "127.0.0.0/8:5432"),
        ("host=/tmp,@kilnbase,::1 port=5432,5433,5434 dbname=kilnbase", "127.0.0.0/8:5433"),
        ("host=fd00::5 port=6543 dbname=kilnbase", "[fd00::5]:6543"),
    ],
)
def test_every_database_host_libpq_takes_gives_a_deny_list_deno_starts_with(
    settings: Settings, conninfo: str, denies: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    denied = denied_hosts(settings, conninfo)
    deno_starts_with(denied, tmp_path_factory.mktemp("deny"))
    assert denies in denied
