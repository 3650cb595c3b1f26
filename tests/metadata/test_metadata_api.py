"""`/api/metadata`: every slice, the keys, and one table in full, against tables made through the tables API
and through raw SQL (RLS on and off, policies, foreign keys, views)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from tests.metadata.conftest import NewName
from tests.support.app import services_of


def _make_blog(sql: Callable[[str], Any], new_name: NewName) -> tuple[str, str, str, str]:
    authors, posts, tags, post_tags = (new_name(p) for p in ("authors", "posts", "tags", "post_tags"))
    sql(
        f"""
        create table {authors} (id bigint generated always as identity primary key, name text not null,
                                email text unique);
        create table {posts} (id uuid primary key default gen_random_uuid(), title text not null
                              check (length(title) > 0), body text,
                              author_id bigint references {authors}(id) on delete cascade,
                              created_at timestamptz not null default now());
        create index on {posts} (author_id);
        create table {tags} (id int primary key, label text);
        create table {post_tags} (post_id uuid references {posts}(id), tag_id int references {tags}(id),
                                  primary key (post_id, tag_id));
        alter table {posts} enable row level security;
        create policy "anyone reads" on {posts} for select to anon, authenticated using (true);
        create policy "authors write" on {posts} for insert to authenticated
          with check (author_id is not null);
        grant select on {posts} to anon;
        grant select, insert on {posts} to authenticated;
        alter table {tags} disable row level security;
        grant select, insert on {tags} to anon;
        insert into {authors} (name) values ('ada'), ('grace');
        create function {posts}_touch() returns trigger language plpgsql as $$ begin return new; end $$;
        create trigger touch before update on {posts} for each row execute function {posts}_touch();
        """
    )
    return authors, posts, tags, post_tags


def test_table_schema_has_every_field(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], new_name: NewName
) -> None:
    authors, posts, tags, post_tags = _make_blog(sql, new_name)
    response = client.get(f"/api/metadata/{posts}", headers=admin)
    assert response.status_code == 200, response.text
    table = response.json()[posts]
    columns = {c["columnName"]: c for c in table["schema"]}
    assert list(columns) == ["id", "title", "body", "author_id", "created_at"]
    assert columns["id"]["dataType"] == "uuid" and columns["id"]["isPrimaryKey"]
    assert columns["id"]["columnDefault"] == "gen_random_uuid()"
    assert columns["title"]["isNullable"] == "NO" and columns["body"]["isNullable"] == "YES"
    assert columns["created_at"]["dataType"] == "timestamp with time zone"
    assert table["primaryKey"] == ["id"]
    assert table["foreignKeys"] == [
        {
            "constraintName": f"{posts}_author_id_fkey",
            "referenceTable": authors,
            "referenceColumns": [{"sourceColumn": "author_id", "referenceColumn": "id"}],
            "onDelete": "CASCADE",
            "onUpdate": "NO ACTION",
        }
    ]
    kinds = {c["type"] for c in table["constraints"]}
    assert {"PRIMARY KEY", "FOREIGN KEY", "CHECK"} <= kinds
    assert any("length(title) > 0" in c["definition"] for c in table["constraints"])
    assert {i["isPrimary"] for i in table["indexes"]} == {True, False}
    assert any("(author_id)" in i["indexdef"] for i in table["indexes"])
    assert table["rlsEnabled"] is True
    policies = {p["policyname"]: p for p in table["policies"]}
    assert policies["anyone reads"]["cmd"] == "SELECT"
    assert sorted(policies["anyone reads"]["roles"]) == ["anon", "authenticated"]
    assert policies["anyone reads"]["qual"] == "true"
    assert policies["authors write"]["withCheck"] == "(author_id IS NOT NULL)"
    assert [t["triggerName"] for t in table["triggers"]] == ["touch"]
    assert "BEFORE UPDATE" in table["triggers"][0]["triggerDef"]
    assert table["recordCount"] == 0
    assert table["access"]["anon"] == ["SELECT"]
    assert table["access"]["authenticated"] == ["INSERT", "SELECT"]
    embeds = {(r["table"], r["cardinality"]) for r in table["relationships"]}
    assert {(authors, "many-to-one"), (post_tags, "one-to-many"), (tags, "many-to-many")} <= embeds

    author_table = client.get(f"/api/metadata/{authors}", headers=admin).json()[authors]
    assert author_table["recordCount"] == 2
    assert author_table["schema"][0]["isIdentity"] is True
    assert (posts, "one-to-many") in {(r["table"], r["cardinality"]) for r in author_table["relationships"]}


def test_tables_made_through_the_tables_api(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    name = new_name("notes")
    created = client.post(
        "/api/database/tables",
        json={
            "tableName": name,
            "columns": [{"columnName": "text", "type": "string", "isNullable": False, "isUnique": False}],
            "rlsEnabled": True,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    table = client.get(f"/api/metadata/{name}", headers=admin).json()[name]
    assert "text" in {c["columnName"] for c in table["schema"]}
    assert table["rlsEnabled"] is True
    listed = client.get("/api/metadata/database", headers=admin).json()
    assert name in {t["tableName"] for t in listed["tables"]}


def test_views_are_described(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], new_name: NewName
) -> None:
    base, view = new_name("items"), new_name("items_view")
    sql(
        f"create table {base} (id int primary key, price numeric);create view {view} as select id from {base}"
    )
    table = client.get(f"/api/metadata/{view}", headers=admin).json()[view]
    assert table["kind"] == "view"
    assert "SELECT" in table["viewDefinition"] and base in table["viewDefinition"]
    database = client.get("/api/metadata/database", headers=admin).json()
    views = {v["tableName"]: v for v in database["views"]}
    assert views[view]["recordCount"] is None  # (a view is not counted: counting runs it)
    assert view not in {t["tableName"] for t in database["tables"]}


def test_missing_table_is_404_and_names_it(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get("/api/metadata/no_such_table_here", headers=admin)
    assert response.status_code == 404
    assert response.json()["error"] == "TABLE_NOT_FOUND"
    assert "no_such_table_here" in response.json()["message"]


def test_overview_and_slices(
    client: TestClient, admin: dict[str, str], sql: Callable[[str], Any], new_name: NewName
) -> None:
    _authors, posts, tags, _ = _make_blog(sql, new_name)
    body = client.get("/api/metadata", headers=admin).json()
    assert set(body) >= {"auth", "database", "storage", "functions", "realtime", "version", "ai"}
    tables = {t["tableName"]: t for t in body["database"]["tables"]}
    assert tables[posts]["rlsEnabled"] is True and tables[tags]["rlsEnabled"] is False
    # RLS off: the grants alone decide (Kilnbase grants the request roles every command on public tables).
    assert tables[tags]["anonAccess"] == ["DELETE", "INSERT", "SELECT", "UPDATE"]
    assert body["auth"]["requireEmailVerification"] is False
    assert "password" not in str(body["auth"]["smtpConfig"]).lower().replace("haspassword", "")
    # Capabilities not built in this server answer with what exists: empty lists, never 404.
    assert client.get("/api/metadata/storage", headers=admin).json() == {"buckets": [], "totalSizeInGB": 0}
    assert client.get("/api/metadata/functions", headers=admin).json() == []
    realtime = client.get("/api/metadata/realtime", headers=admin).json()
    assert realtime["channels"] == [] and set(realtime["permissions"]) == {"subscribe", "publish"}
    auth = client.get("/api/metadata/auth", headers=admin).json()
    assert auth["oAuthProviders"] == [] and auth["disableSignup"] is False


def test_keys_and_project_id(client: TestClient, admin: dict[str, str]) -> None:
    api_key = client.get("/api/metadata/api-key", headers=admin).json()["apiKey"]
    assert api_key.startswith("ik_") and admin["Authorization"].endswith(api_key)
    assert client.get("/api/metadata/anon-key", headers=admin).json()["anonKey"].startswith("anon_")
    assert client.get("/api/metadata/project-id", headers=admin).json() == {"projectId": None}
    audits = client.get("/api/logs/audits?action=READ_API_KEY", headers=admin).json()
    assert audits and audits[0]["module"] == "METADATA"


def test_the_databases_credentials_are_refused_not_read_as_a_table(
    client: TestClient, admin: dict[str, str], anon: dict[str, str]
) -> None:
    """InsForge Cloud answers these with the database's own login; Kilnbase refuses them in words (they are
    no tables), and never answers with the database's password."""
    password = services_of(client).core.keys.postgres_password
    for path in ("/api/metadata/database-connection-string", "/api/metadata/database-password"):
        refused = client.get(path, headers=admin)
        assert refused.status_code == 403, refused.text
        assert (refused.json()["error"], refused.json()["message"]) == (
            "FORBIDDEN",
            "Kilnbase does not hand out the database's credentials over its API.",
        )
        assert password not in refused.text
        assert client.get(path, headers=anon).json()["message"] == "Invalid token"


def test_admin_only(client: TestClient, anon: dict[str, str]) -> None:
    for path in ("/api/metadata", "/api/metadata/api-key", "/api/metadata/database", "/api/metadata/x"):
        assert client.get(path, headers=anon).status_code == 401
        assert client.get(path).status_code == 401


def test_bad_format_is_400(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get("/api/metadata?format=xml", headers=admin)
    assert response.status_code == 400 and response.json()["error"] == "INVALID_INPUT"


def test_a_table_the_admin_role_cannot_read(
    client: TestClient, admin: dict[str, str], new_name: NewName
) -> None:
    """Tables in `public` always belong to project_admin; one made by the owner in another schema may not."""
    schema = new_name("private")
    response = client.post(
        "/api/database/advance/rawsql/unrestricted",
        json={"query": f"create schema {schema}; create table {schema}.secrets (id int primary key)"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    table = client.get(f"/api/metadata/{schema}.secrets", headers=admin).json()[f"{schema}.secrets"]
    assert [c["columnName"] for c in table["schema"]] == ["id"]
    assert table["recordCount"] == 0 and table["recordCountEstimated"] is True
    assert table["access"] == {"anon": [], "authenticated": []}
