"""Reads are paged at the server's `max_rows` (PostgREST's `db-max-rows`, `KILNBASE_DB_MAX_ROWS`): one
request with the public anon key, no `limit` or a huge one, answered with a whole table, grew the server
by hundreds of MB (several at once, by GBs). The page is cut, never refused; `Content-Range` says so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import RecordsSettings, Settings
from tests.security.conftest import OwnerSql

MAX_ROWS = 50
ROWS = 120


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        records=RecordsSettings(max_rows=MAX_ROWS),
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module", autouse=True)
def readings(client: TestClient, admin: dict[str, str]) -> None:
    """A table anyone may read, with more rows than one page, and a function returning them all."""
    query = f"""
        create table public.readings (id int primary key, value text);
        insert into public.readings select g, 'v' || g from generate_series(1, {ROWS}) g;
        create policy anyone_reads on public.readings for select to anon using (true);
        create function public.all_readings() returns setof public.readings language sql stable
            as $$ select * from public.readings $$;
    """
    response = client.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
    assert response.status_code == 200, response.text


def ids(response_json: list[dict[str, object]]) -> list[object]:
    return [row["id"] for row in response_json]


@pytest.mark.parametrize(
    "path",
    [
        "/api/database/records/readings?order=id",
        f"/api/database/records/readings?order=id&limit={ROWS * 1000}",
        "/api/database/rpc/all_readings?order=id",
    ],
    ids=["no-limit", "huge-limit", "rpc"],
)
def test_an_anonymous_read_gets_at_most_max_rows(client: TestClient, anon: dict[str, str], path: str) -> None:
    response = client.get(path, headers=anon)
    assert response.status_code == 200, response.text
    assert ids(response.json()) == list(range(1, MAX_ROWS + 1))
    assert response.headers["content-range"] == f"0-{MAX_ROWS - 1}/*"


def test_a_range_past_max_rows_is_cut_and_the_count_tells_the_rest(
    client: TestClient, anon: dict[str, str]
) -> None:
    response = client.get(
        "/api/database/records/readings?order=id",
        headers={**anon, "Range": f"10-{ROWS}", "Prefer": "count=exact"},
    )
    assert response.status_code == 206, response.text
    assert ids(response.json()) == list(range(11, 11 + MAX_ROWS))
    assert response.headers["content-range"] == f"10-{10 + MAX_ROWS - 1}/{ROWS}"


def test_pages_below_max_rows_are_untouched(
    client: TestClient, anon: dict[str, str], owner_sql: OwnerSql
) -> None:
    response = client.get("/api/database/records/readings?order=id&limit=5&offset=100", headers=anon)
    assert ids(response.json()) == [101, 102, 103, 104, 105]
    assert owner_sql("select count(*)::int as n from public.readings") == [{"n": ROWS}]


def test_by_default_a_read_is_not_capped_as_in_insforge(
    settings: Settings, admin: dict[str, str], anon: dict[str, str]
) -> None:
    """InsForge's PostgREST sets no `db-max-rows`: a client written for it that reads more rows than
    Supabase's 1000 without paging gets them all, not a silently shorter page."""
    default = Settings(database_url=settings.database_url, data_dir=settings.data_dir)
    with TestClient(create_app(default), raise_server_exceptions=False) as uncapped:
        query = """
            create table public.many_readings (id int primary key);
            insert into public.many_readings select generate_series(1, 1500);
            create policy anyone_reads on public.many_readings for select to anon using (true);
        """
        created = uncapped.post("/api/database/advance/rawsql", headers=admin, json={"query": query})
        assert created.status_code == 200, created.text
        response = uncapped.get("/api/database/records/many_readings?order=id", headers=anon)
    assert response.status_code == 200, response.text
    assert ids(response.json()) == list(range(1, 1501))
    assert response.headers["content-range"] == "0-1499/*"
