"""Catalog rows shaped for the answers: one table in InsForge's `get-table-schema` shape (with what Kilnbase
adds), and the relationships an embed can follow, worked out from the schema's foreign keys as PostgREST
does: many-to-one along a key, one-to-many against it, many-to-many through a table holding keys to both."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import DictRow


@dataclass(frozen=True)
class ForeignKeyEdge:
    table: str
    name: str
    columns: tuple[str, ...]
    foreign_table: str
    foreign_columns: tuple[str, ...]


def edges(rows: Iterable[DictRow]) -> list[ForeignKeyEdge]:
    return [
        ForeignKeyEdge(
            row["table"],
            row["name"],
            tuple(row["columns"]),
            row["foreign_table"],
            tuple(row["foreign_columns"]),
        )
        for row in rows
    ]


def relationships(table: str, schema_edges: Sequence[ForeignKeyEdge]) -> list[dict[str, Any]]:
    """What `select=...,other(*)` can embed from `table`, with the constraint to name as a hint."""
    found: list[dict[str, Any]] = []
    for edge in schema_edges:
        if edge.table == table:
            found.append(
                {
                    "table": edge.foreign_table,
                    "cardinality": "many-to-one",
                    "constraint": edge.name,
                    "columns": list(edge.columns),
                    "referencedColumns": list(edge.foreign_columns),
                }
            )
        if edge.foreign_table == table:
            found.append(
                {
                    "table": edge.table,
                    "cardinality": "one-to-many",
                    "constraint": edge.name,
                    "columns": list(edge.foreign_columns),
                    "referencedColumns": list(edge.columns),
                }
            )
            for other in schema_edges:
                if other.table == edge.table and other.name != edge.name and other.table != table:
                    found.append(
                        {
                            "table": other.foreign_table,
                            "cardinality": "many-to-many",
                            "constraint": other.name,
                            "via": edge.table,
                        }
                    )
    return found


def _by_table(rows: Iterable[DictRow], table: str) -> list[DictRow]:
    return [row for row in rows if row["table"] == table]


def table_detail(
    relation: DictRow, found: dict[str, list[DictRow]], schema_edges: Sequence[ForeignKeyEdge]
) -> dict[str, Any]:
    """One table or view: InsForge's keys (`schema`, `indexes`, `foreignKeys`, `rlsEnabled`, `policies`,
    `triggers`, `rows`) and Kilnbase's (`kind`, `primaryKey`, `constraints`, `relationships`,
    `recordCount`, `rlsForced`, `access`, `viewDefinition`)."""
    name = relation["name"]
    constraints = _by_table(found["constraints"], name)
    primary = next((row for row in constraints if row["type"] == "p"), None)
    primary_key = list(primary["columns"]) if primary else []
    view = next((row for row in found["views"] if row["table"] == name), None)
    return {
        "kind": relation["kind"],
        "schema": [
            {
                "columnName": row["name"],
                "dataType": row["type"],
                "characterMaximumLength": row["max_length"],
                "isNullable": "YES" if row["nullable"] else "NO",
                "columnDefault": row["default"],
                "isPrimaryKey": row["name"] in primary_key,
                "isIdentity": row["identity"],
                "isGenerated": row["generated"],
            }
            for row in _by_table(found["columns"], name)
        ],
        "primaryKey": primary_key,
        "indexes": [
            {
                "indexname": row["name"],
                "indexdef": row["definition"],
                "isUnique": row["unique"],
                "isPrimary": row["primary"],
            }
            for row in _by_table(found["indexes"], name)
        ],
        "foreignKeys": [
            {
                "constraintName": row["name"],
                "referenceTable": row["foreign_table"]
                if row["foreign_schema"] == "public"
                else f"{row['foreign_schema']}.{row['foreign_table']}",
                "referenceColumns": [
                    {"sourceColumn": source, "referenceColumn": target}
                    for source, target in zip(row["columns"], row["foreign_columns"], strict=False)
                ],
                "onDelete": row["on_delete"],
                "onUpdate": row["on_update"],
            }
            for row in constraints
            if row["type"] == "f"
        ],
        "constraints": [
            {
                "constraintName": row["name"],
                "type": {
                    "p": "PRIMARY KEY",
                    "u": "UNIQUE",
                    "c": "CHECK",
                    "f": "FOREIGN KEY",
                    "x": "EXCLUDE",
                }.get(row["type"], row["type"]),
                "columns": list(row["columns"]),
                "definition": row["definition"],
            }
            for row in constraints
        ],
        "relationships": relationships(name, schema_edges),
        "rlsEnabled": relation["rls"],
        "rlsForced": relation["rls_forced"],
        "policies": [
            {
                "policyname": row["name"],
                "cmd": row["cmd"],
                "roles": list(row["roles"]),
                "permissive": row["permissive"],
                "qual": row["qual"],
                "withCheck": row["withCheck"],
            }
            for row in _by_table(found["policies"], name)
        ],
        "access": {"anon": list(relation["anon"]), "authenticated": list(relation["authenticated"])},
        "triggers": [
            {"triggerName": row["name"], "triggerDef": row["definition"], "enabled": row["enabled"]}
            for row in _by_table(found["triggers"], name)
        ],
        "recordCount": relation["row_count"],
        "recordCountEstimated": relation["row_count_estimated"],
        **({"viewDefinition": view["definition"]} if view else {}),
        "rows": [],
    }
