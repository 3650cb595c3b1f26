"""Tables the InsForge way: create with auto fields (`id` uuid, `created_at`, `updated_at` + trigger), read a
table's schema, alter it, drop it. DDL runs as project_admin (so project_admin owns what it creates), and
every name or default from the request is composed with `psycopg.sql` (quoted identifiers, literals).
Auditing and the schema cache are the caller's (`database/admin.py`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow, dict_row

from kilnbase.database.database_errors import api_error_from
from kilnbase.db.session import Database, DatabaseIdentity
from kilnbase.http.errors import ApiError

#: InsForge's column types and the SQL each becomes; any other Postgres type name is accepted as is.
COLUMN_TYPES = {
    "string": "TEXT",
    "date": "DATE",
    "datetime": "TIMESTAMPTZ",
    "integer": "INTEGER",
    "float": "DOUBLE PRECISION",
    "boolean": "BOOLEAN",
    "uuid": "UUID",
    "json": "JSONB",
}
AUTO_FIELDS = {"id": "uuid", "created_at": "datetime", "updated_at": "datetime"}
_SQL_TO_TYPE = {
    "text": "string",
    "character varying": "string",
    "character": "string",
    "date": "date",
    "timestamp with time zone": "datetime",
    "timestamp without time zone": "datetime",
    "integer": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "double precision": "float",
    "real": "float",
    "numeric": "float",
    "boolean": "boolean",
    "uuid": "uuid",
    "jsonb": "json",
    "json": "json",
}
_RAW_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,62}(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SAFE_DEFAULT_FUNCTIONS = {"now()", "gen_random_uuid()"}
_FK_ACTIONS = {"CASCADE", "RESTRICT", "SET NULL", "SET DEFAULT", "NO ACTION"}


def identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            f"Invalid {what} name: {value!r}",
            "Use letters, digits and underscores, starting with a letter or underscore (max 63).",
        )
    return value


def sql_type(value: Any) -> sql.Composable:
    if not isinstance(value, str):
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", "column type must be a string")
    mapped = COLUMN_TYPES.get(value.lower())
    if mapped is not None:
        return sql.SQL(mapped)
    if not _RAW_TYPE.fullmatch(value.strip()):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            f"Unknown column type: {value!r}",
            "Use string, date, datetime, integer, float, boolean, uuid, json, or a Postgres type name.",
        )
    return sql.SQL(value.strip())


def default_clause(value: Any) -> sql.Composable:
    if value is None or value == "":
        return sql.SQL("")
    text = str(value).strip()
    if text.lower() in _SAFE_DEFAULT_FUNCTIONS:
        return sql.SQL(" DEFAULT {}").format(sql.SQL(text.lower()))
    return sql.SQL(" DEFAULT {}").format(sql.Literal(text))


def _fk_clause(column: str, fk: Any) -> sql.Composable:
    if not isinstance(fk, dict):
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", "foreignKey must be an object")
    table = fk.get("referenceTable")
    schema, _, name = table.rpartition(".") if isinstance(table, str) else ("", "", table)
    reference_column = identifier(fk.get("referenceColumn", "id"), "reference column")
    on_delete = str(fk.get("onDelete") or "RESTRICT").upper()
    on_update = str(fk.get("onUpdate") or "RESTRICT").upper()
    if on_delete not in _FK_ACTIONS or on_update not in _FK_ACTIONS:
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", "onDelete/onUpdate must be a referential action")
    target = (
        sql.SQL("{}.{}").format(
            sql.Identifier(identifier(schema, "schema")), sql.Identifier(identifier(name, "table"))
        )
        if schema
        else sql.Identifier(identifier(name, "table"))
    )
    constraint = f"fk_{column}_{(table or '').replace('.', '_')}_{reference_column}"[:63]
    return sql.SQL("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}").format(
        sql.Identifier(constraint),
        sql.Identifier(column),
        target,
        sql.Identifier(reference_column),
        sql.SQL(on_delete),
        sql.SQL(on_update),
    )


def _column_definition(column: Any, *, adding: bool) -> tuple[str, sql.Composable, sql.Composable | None]:
    if not isinstance(column, dict):
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", "each column must be an object")
    name = identifier(column.get("columnName"), "column")
    nullable = column.get("isNullable", True) is not False
    parts: list[sql.Composable] = [sql.Identifier(name), sql.SQL(" "), sql_type(column.get("type"))]
    if column.get("isPrimaryKey") and not adding:
        parts.append(sql.SQL(" PRIMARY KEY"))
    if not nullable:
        parts.append(sql.SQL(" NOT NULL"))
    if column.get("isUnique"):
        parts.append(sql.SQL(" UNIQUE"))
    parts.append(default_clause(column.get("defaultValue")))
    fk = column.get("foreignKey")
    return name, sql.Composed(parts), _fk_clause(name, fk) if fk else None


class TableService:
    """Table DDL and descriptions, run as the calling admin (project_admin) on the request pool."""

    def __init__(self, database: Database, identity: DatabaseIdentity) -> None:
        self.database = database
        self.identity = identity

    @asynccontextmanager
    async def _as_admin(self) -> AsyncIterator[AsyncCursor[DictRow]]:
        try:
            async with self.database.transaction_as(self.identity) as conn:
                yield conn.cursor(row_factory=dict_row)
        except psycopg.Error as exc:
            raise api_error_from(exc) from None

    async def list_tables(self, schema: str = "public") -> list[str]:
        async with self._as_admin() as cur:
            await cur.execute(
                "select table_name from information_schema.tables where table_schema = %s "
                "and table_type = 'BASE TABLE' order by table_name",
                (schema,),
            )
            return [row["table_name"] for row in await cur.fetchall()]

    async def create_table(self, body: dict[str, Any]) -> dict[str, Any]:
        table = identifier(body.get("tableName"), "table")
        columns = body.get("columns")
        if not isinstance(columns, list) or not columns:
            raise ApiError(
                400, "MISSING_FIELD", "columns must be a non-empty array", "Add at least one column."
            )
        user_columns = []
        for column in columns:
            name = column.get("columnName") if isinstance(column, dict) else None
            if name in AUTO_FIELDS:
                if str(column.get("type", "")).lower() != AUTO_FIELDS[name]:
                    raise ApiError(
                        400,
                        "DATABASE_VALIDATION_ERROR",
                        f"Column '{name}' is a reserved field that requires type '{AUTO_FIELDS[name]}'",
                        "id, created_at and updated_at are added automatically.",
                    )
                continue
            user_columns.append(column)
        if not user_columns:
            raise ApiError(
                400,
                "DATABASE_VALIDATION_ERROR",
                "Table must have at least one user-defined column",
                "Add a column other than id, created_at or updated_at.",
            )
        definitions: list[sql.Composable] = [sql.SQL("id UUID PRIMARY KEY DEFAULT gen_random_uuid()")]
        constraints: list[sql.Composable] = []
        described = []
        for column in user_columns:
            name, definition, fk = _column_definition(column, adding=False)
            definitions.append(definition)
            if fk is not None:
                constraints.append(fk)
            type_name = str(column.get("type"))
            described.append({**column, "sqlType": COLUMN_TYPES.get(type_name.lower(), type_name)})
        for fk in body.get("foreignKeys") or []:
            constraints.extend(_legacy_foreign_keys(fk))
        definitions.append(sql.SQL("created_at TIMESTAMPTZ DEFAULT now()"))
        definitions.append(sql.SQL("updated_at TIMESTAMPTZ DEFAULT now()"))
        async with self._as_admin() as cur:
            await cur.execute("select to_regclass(%s) is not null as found", (f'public."{table}"',))
            row = await cur.fetchone()
            if row and row["found"]:
                raise ApiError(
                    400, "DATABASE_DUPLICATE", f"table {table} already exists", "Choose a unique table name."
                )
            await cur.execute(
                sql.SQL("CREATE TABLE {} ({})").format(
                    sql.Identifier("public", table), sql.SQL(", ").join(definitions + constraints)
                )
            )
            if body.get("rlsEnabled", True) is False:
                await cur.execute(
                    sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(
                        sql.Identifier("public", table)
                    )
                )
            await cur.execute(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE UPDATE ON {} "
                    "FOR EACH ROW EXECUTE FUNCTION system.update_updated_at()"
                ).format(sql.Identifier(f"{table}_update_timestamp"[:63]), sql.Identifier("public", table))
            )
        return {
            "message": "table created successfully",
            "tableName": table,
            "columns": described,
            "autoFields": ["id", "created_at", "updated_at"],
            "nextActions": f"You can now use the table with /api/database/records/{table}.",
        }

    async def table_schema(self, table: str) -> dict[str, Any]:
        async with self._as_admin() as cur:
            return await self._schema(cur, table)

    async def _schema(self, cur: AsyncCursor[DictRow], table: str) -> dict[str, Any]:
        await cur.execute(
            """
            select a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
                   not a.attnotnull as nullable,
                   pg_get_expr(d.adbin, d.adrelid) as default,
                   exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary
                           and a.attnum = any(i.indkey)) as primary_key,
                   exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique
                           and i.indnkeyatts = 1 and i.indkey[0] = a.attnum) as is_unique
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
            where n.nspname = 'public' and c.relname = %s and c.relkind in ('r', 'p')
            order by a.attnum
            """,
            (table,),
        )
        columns = await cur.fetchall()
        if not columns:
            raise ApiError(
                404, "DATABASE_NOT_FOUND", "table not found", "List tables with GET /api/database/tables."
            )
        await cur.execute(
            """
            select con.conname as name, a.attname as column_name, fn.nspname as foreign_schema,
                   fc.relname as foreign_table, fa.attname as foreign_column,
                   con.confdeltype as on_delete, con.confupdtype as on_update
            from pg_constraint con
            join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
            join pg_class fc on fc.oid = con.confrelid join pg_namespace fn on fn.oid = fc.relnamespace
            cross join lateral unnest(con.conkey, con.confkey) as k(col, fcol)
            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.col
            join pg_attribute fa on fa.attrelid = con.confrelid and fa.attnum = k.fcol
            where con.contype = 'f' and n.nspname = 'public' and c.relname = %s
            """,
            (table,),
        )
        actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
        foreign = {
            row["column_name"]: {
                "constraintName": row["name"],
                "referenceTable": row["foreign_table"]
                if row["foreign_schema"] == "public"
                else f"{row['foreign_schema']}.{row['foreign_table']}",
                "referenceColumn": row["foreign_column"],
                "onDelete": actions.get(row["on_delete"], "NO ACTION"),
                "onUpdate": actions.get(row["on_update"], "NO ACTION"),
            }
            for row in await cur.fetchall()
        }
        await cur.execute(sql.SQL("select count(*) as n from {}").format(sql.Identifier("public", table)))
        count = await cur.fetchone()
        described = []
        for column in columns:
            entry: dict[str, Any] = {
                "columnName": column["name"],
                "type": _SQL_TO_TYPE.get(column["type"], column["type"]),
                "isNullable": column["nullable"],
                "isPrimaryKey": column["primary_key"],
                "isUnique": column["primary_key"] or column["is_unique"],
                "defaultValue": _plain_default(column["default"]),
            }
            if column["name"] in foreign:
                entry["foreignKey"] = foreign[column["name"]]
            described.append(entry)
        return {"tableName": table, "columns": described, "recordCount": int(count["n"]) if count else 0}

    async def update_table(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        identifier(table, "table")
        target = sql.Identifier("public", table)
        done: list[str] = []
        async with self._as_admin() as cur:
            current = await self._schema(cur, table)
            foreign = {c["columnName"]: c["foreignKey"] for c in current["columns"] if "foreignKey" in c}
            for column in _list(body, "dropForeignKeys"):
                fk = foreign.get(column)
                if fk:
                    await cur.execute(
                        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            target, sql.Identifier(fk["constraintName"])
                        )
                    )
                    done.append(f"Dropped foreign key constraint on column: {column}")
            for column in _list(body, "dropColumns"):
                name = identifier(column, "column")
                if name in AUTO_FIELDS:
                    raise ApiError(
                        400, "DATABASE_FORBIDDEN", "cannot drop system columns", f"'{name}' is managed."
                    )
                await cur.execute(
                    sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(target, sql.Identifier(name))
                )
                done.append(f"Dropped column: {name}")
            for column in _list(body, "updateColumns"):
                if not isinstance(column, dict):
                    raise ApiError(400, "DATABASE_INVALID_PARAMETER", "updateColumns items must be objects")
                name = identifier(column.get("columnName"), "column")
                if name in AUTO_FIELDS:
                    raise ApiError(
                        400, "DATABASE_FORBIDDEN", "cannot update system columns", f"'{name}' is managed."
                    )
                if "defaultValue" in column:
                    if column["defaultValue"] in ("", None):
                        statement = sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT")
                        await cur.execute(statement.format(target, sql.Identifier(name)))
                    else:
                        statement = sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET{}")
                        await cur.execute(
                            statement.format(
                                target, sql.Identifier(name), default_clause(column["defaultValue"])
                            )
                        )
                if column.get("newColumnName"):
                    new_name = identifier(column["newColumnName"], "column")
                    statement = sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}")
                    await cur.execute(
                        statement.format(target, sql.Identifier(name), sql.Identifier(new_name))
                    )
                done.append(f"Updated column: {name}")
            for column in _list(body, "addColumns"):
                name, definition, fk = _column_definition(column, adding=True)
                if name in AUTO_FIELDS:
                    continue
                await cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(target, definition))
                if fk is not None:
                    await cur.execute(sql.SQL("ALTER TABLE {} ADD {}").format(target, fk))
                done.append(f"Added column: {name}")
            for item in _list(body, "addForeignKeys"):
                if not isinstance(item, dict):
                    raise ApiError(400, "DATABASE_INVALID_PARAMETER", "addForeignKeys items must be objects")
                name = identifier(item.get("columnName"), "column")
                await cur.execute(
                    sql.SQL("ALTER TABLE {} ADD {}").format(target, _fk_clause(name, item.get("foreignKey")))
                )
                done.append(f"Added foreign key constraint on column: {name}")
            rename = body.get("renameTable")
            if isinstance(rename, dict) and rename.get("newTableName"):
                new_table = identifier(rename["newTableName"], "table")
                await cur.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, sql.Identifier(new_table))
                )
                done.append(f"Renamed table from {table} to {new_table}")
        return {"message": "table schema updated successfully", "tableName": table, "operations": done}

    async def delete_table(self, table: str) -> dict[str, Any]:
        identifier(table, "table")
        async with self._as_admin() as cur:
            await cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier("public", table))
            )
        return {
            "message": "table deleted successfully",
            "tableName": table,
            "nextActions": "Create a new table with POST /api/database/tables.",
        }


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", f"{key} must be an array")
    return value


def _legacy_foreign_keys(fk: Any) -> list[sql.Composable]:
    """The older top-level shape: `{referenceTable, referenceColumns[{sourceColumn, referenceColumn}]}`."""
    if not isinstance(fk, dict) or not isinstance(fk.get("referenceColumns"), list):
        raise ApiError(
            400, "DATABASE_INVALID_PARAMETER", "foreignKeys items need referenceTable and referenceColumns"
        )
    clauses = []
    for pair in fk["referenceColumns"]:
        if not isinstance(pair, dict):
            raise ApiError(400, "DATABASE_INVALID_PARAMETER", "referenceColumns items must be objects")
        source = identifier(pair.get("sourceColumn"), "column")
        clauses.append(
            _fk_clause(
                source,
                {
                    "referenceTable": fk.get("referenceTable"),
                    "referenceColumn": pair.get("referenceColumn"),
                    "onDelete": fk.get("onDelete"),
                    "onUpdate": fk.get("onUpdate"),
                },
            )
        )
    return clauses


def _plain_default(value: str | None) -> str | None:
    """`'abc'::text` -> `abc`, `0::integer`... -> `0`, as InsForge shows defaults."""
    if value is None:
        return None
    match = re.fullmatch(r"'((?:[^']|'')*)'::[\w\s]+", value)
    if match:
        return match[1].replace("''", "'")
    match = re.fullmatch(r"(.+?)::[\w\s]+", value)
    return match[1] if match else value
