"""PostgREST's embedding edge cases, from its documentation (resource embedding, disambiguation) and
`EmbedDisambiguationSpec`: a constraint or column name selects a relationship to a table even when views
over the same tables exist; a table related to itself embeds both ways; one name embedded twice is 400
42712 (the statement's duplicate alias), never a JSON object with a key twice.

The rows are created once for the module and only read.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

RECORDS = "/api/database/records"


@pytest.fixture(scope="module", autouse=True)
def embed_tables(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE clients (id int PRIMARY KEY, name text);
            CREATE TABLE projects (id int PRIMARY KEY, name text, client_id int REFERENCES clients (id));
            CREATE VIEW clients_view AS SELECT id, name FROM clients;
            CREATE VIEW projects_view AS SELECT id, name, client_id FROM projects;
            GRANT SELECT ON clients_view, projects_view TO project_admin;
            INSERT INTO clients VALUES (1, 'Microsoft'), (2, 'Apple');
            INSERT INTO projects VALUES (1, 'Windows 7', 1), (2, 'Windows 10', 1), (3, 'IOS', 2);

            CREATE TABLE family_tree (id int PRIMARY KEY, name text, parent int REFERENCES family_tree (id));
            INSERT INTO family_tree VALUES (1, 'Parental Unit', NULL), (2, 'Kid One', 1), (3, 'Kid Two', 1);

            CREATE TABLE organizations (
                id int PRIMARY KEY, name text,
                referee int REFERENCES organizations (id), auditor int REFERENCES organizations (id)
            );
            INSERT INTO organizations VALUES (1, 'Referee Org', NULL, NULL), (2, 'Auditor Org', NULL, NULL),
                (3, 'Acme', 1, 2), (4, 'Umbrella', 1, 2);
            """
        )


def get(client: TestClient, headers: dict[str, str], query: str) -> Any:
    return client.get(f"{RECORDS}/{query}", headers=headers)


def ok(client: TestClient, headers: dict[str, str], query: str) -> Any:
    response = get(client, headers, query)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_column_name_embeds_its_table_despite_views_over_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert ok(client, admin, "projects?select=id,client_id(name)&order=id") == [
        {"id": 1, "client_id": {"name": "Microsoft"}},
        {"id": 2, "client_id": {"name": "Microsoft"}},
        {"id": 3, "client_id": {"name": "Apple"}},
    ]
    assert ok(client, admin, "projects?select=id,client:client_id(name)&id=eq.3") == [
        {"id": 3, "client": {"name": "Apple"}}
    ]


def test_a_constraint_name_embeds_its_table_despite_views_over_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert ok(client, admin, "projects?select=id,projects_client_id_fkey(name)&id=eq.1") == [
        {"id": 1, "projects_client_id_fkey": {"name": "Microsoft"}}
    ]
    assert ok(client, admin, "clients?select=name,projects:projects_client_id_fkey(name)&id=eq.2") == [
        {"name": "Apple", "projects": [{"name": "IOS"}]}
    ]


def test_views_are_embedded_by_their_own_names(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "projects_view?select=id,clients_view(name)&id=eq.3") == [
        {"id": 3, "clients_view": {"name": "Apple"}}
    ]
    assert ok(client, admin, "projects?select=id,clients(name)&id=eq.3") == [
        {"id": 3, "clients": {"name": "Apple"}}
    ]


def test_a_self_referencing_table_embeds_parent_and_children(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert ok(client, admin, "family_tree?select=name,parent(name)&id=eq.2") == [
        {"name": "Kid One", "parent": {"name": "Parental Unit"}}
    ]
    assert ok(client, admin, "family_tree?select=name,children:family_tree(name)&id=eq.1") == [
        {"name": "Parental Unit", "children": [{"name": "Kid One"}, {"name": "Kid Two"}]}
    ]


def test_self_references_told_apart_by_hints(client: TestClient, admin: dict[str, str]) -> None:
    assert ok(client, admin, "organizations?select=name,referee(name),auditor(name)&id=eq.3") == [
        {"name": "Acme", "referee": {"name": "Referee Org"}, "auditor": {"name": "Auditor Org"}}
    ]
    assert ok(client, admin, "organizations?select=name,auditees:organizations!auditor(name)&id=eq.2") == [
        {"name": "Auditor Org", "auditees": [{"name": "Acme"}, {"name": "Umbrella"}]}
    ]
    ambiguous = get(client, admin, "organizations?select=name,organizations(name)")
    assert ambiguous.status_code == 300
    assert ambiguous.json()["code"] == "PGRST201"


def test_the_same_embed_twice_under_one_name_is_42712(client: TestClient, admin: dict[str, str]) -> None:
    response = get(client, admin, "organizations?select=id,referee(id,name),referee(id,name)")
    assert response.status_code == 400
    assert response.json() == {
        "code": "42712",
        "details": None,
        "hint": None,
        "message": 'table name "organizations_referee_1" specified more than once',
    }
    nested = get(client, admin, "projects?select=id,clients(id,projects(id),projects(name))")
    assert nested.status_code == 400
    assert nested.json()["message"] == 'table name "clients_projects_2" specified more than once'
    # Under two names the same relationship embeds twice.
    assert ok(client, admin, "organizations?select=id,a:referee(name),b:referee(name)&id=eq.4") == [
        {"id": 4, "a": {"name": "Referee Org"}, "b": {"name": "Referee Org"}}
    ]
