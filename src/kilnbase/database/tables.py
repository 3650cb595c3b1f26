"""Tables the InsForge way: create with auto fields (`id` uuid, `created_at`, `updated_at` + trigger), read a
table's schema, alter it, drop it. DDL runs as project_admin (so project_admin owns what it creates), and
every name or default from the request is composed with `psycopg.sql` (quoted identifiers, literals).
Auditing and the schema cache are the caller's (`database/admin.py`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow, dict_row

from kilnbase.capability import HeldForApproval
from kilnbase.database.database_errors import LIST_TABLES, api_error_from
from kilnbase.db.session import Database, DatabaseIdentity
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import zod_type
from kilnbase.keys.column_cipher import ENCRYPTABLE_TYPES, STORED_FORMAT

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
    "timestamptz": "datetime",
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
_RAW_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,62}(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])*", re.ASCII)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SAFE_DEFAULT_FUNCTIONS = {"now()", "gen_random_uuid()"}
_TYPES = "Use string, date, datetime, integer, float, boolean, uuid, json, or a Postgres type name."
_FK_ACTIONS = ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION")
_ACTION_NAMES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


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
        raise ApiError(400, "DATABASE_INVALID_PARAMETER", "column type must be a string", _TYPES)
    mapped = COLUMN_TYPES.get(value.lower())
    if mapped is not None:
        return sql.SQL(mapped)
    if not _RAW_TYPE.fullmatch(value.strip()):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            f"Unknown column type: {value!r}",
            _TYPES,
        )
    return sql.SQL(value.strip())


def default_clause(value: Any) -> sql.Composable:
    if value is None or value == "":
        return sql.SQL("")
    text = str(value).strip()
    if text.lower() in _SAFE_DEFAULT_FUNCTIONS:
        return sql.SQL(" DEFAULT {}").format(sql.SQL(text.lower()))
    return sql.SQL(" DEFAULT {}").format(sql.Literal(text))


def _reference_table(value: Any, where: str) -> tuple[str, sql.Composable]:
    """The referenced table as `(name as given, quoted)`: `t` (in public) or `schema.t`."""
    if not isinstance(value, str) or not value:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{where}.referenceTable: Target table cannot be empty",
            "Send referenceTable, the name of the table the key points at.",
        )
    schema, _, name = value.rpartition(".")
    if schema:
        return value, sql.Identifier(identifier(schema, "schema"), identifier(name, "table"))
    return value, sql.Identifier(identifier(name, "table"))


def _action(fk: dict[str, Any], key: str, where: str) -> str:
    """`onDelete`/`onUpdate`: one of Postgres's referential actions (RESTRICT when absent)."""
    value = fk.get(key)
    if value is None:
        return "RESTRICT"
    if not isinstance(value, str) or value.upper() not in _FK_ACTIONS:
        expected = " | ".join(f"'{action}'" for action in _FK_ACTIONS)
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{where}.{key}: Invalid enum value. Expected {expected}, received {value!r}",
            "Use one of those actions, or leave it out for RESTRICT.",
        )
    return value.upper()


def constraint_name(sources: list[str], reference_table: str, references: list[str]) -> str:
    """InsForge's name for a foreign key: `fk_<sources>_<table>_<references>`, shortened with a hash of the
    whole when it passes Postgres's 63 characters."""
    base = f"fk_{'_'.join(sources)}_{reference_table.replace('.', '_')}_{'_'.join(references)}"
    if len(base) <= 63:
        return base
    return f"{base[: 63 - 9]}_{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def foreign_key_clause(fk: Any, where: str) -> tuple[list[str], str, sql.Composable]:
    """One foreign-key constraint in InsForge's shape (`{referenceTable, referenceColumns: [{sourceColumn,
    referenceColumn}], onDelete, onUpdate}`; several pairs make one composite key): (source columns,
    reference table, the `CONSTRAINT ... FOREIGN KEY ...` clause). `where` names the entry in messages."""
    if not isinstance(fk, dict):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{where}: Expected object, received {zod_type(fk)}",
            "Send each foreign key as {referenceTable, referenceColumns: [{sourceColumn, "
            "referenceColumn}], onDelete?, onUpdate?}.",
        )
    table, target = _reference_table(fk.get("referenceTable"), where)
    pairs = fk.get("referenceColumns")
    if not isinstance(pairs, list) or not pairs:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{where}.referenceColumns: At least one column mapping is required",
            "Send referenceColumns as [{sourceColumn, referenceColumn}], one pair for each column of the "
            "key.",
        )
    sources, references = [], []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"{where}.referenceColumns.{index}: Expected object",
                "Send each mapping as {sourceColumn, referenceColumn}.",
            )
        sources.append(identifier(pair.get("sourceColumn"), "source column"))
        references.append(identifier(pair.get("referenceColumn"), "reference column"))
    for source in sources:
        if source in AUTO_FIELDS:
            raise ApiError(
                400,
                "DATABASE_FORBIDDEN",
                "cannot add foreign key on system columns",
                f"You cannot add foreign key on the system column '{source}'",
            )
    clause = sql.SQL("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}").format(
        sql.Identifier(constraint_name(sources, table, references)),
        sql.SQL(", ").join(sql.Identifier(c) for c in sources),
        target,
        sql.SQL(", ").join(sql.Identifier(c) for c in references),
        sql.SQL(_action(fk, "onDelete", where)),
        sql.SQL(_action(fk, "onUpdate", where)),
    )
    return sources, table, clause


def _fk_clause(column: str, fk: Any) -> sql.Composable:
    """A column's own `foreignKey: {referenceTable, referenceColumn?, onDelete?, onUpdate?}` (the per-column
    shape; `referenceColumn` defaults to `id`)."""
    if not isinstance(fk, dict):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            "foreignKey must be an object",
            "Send foreignKey as {referenceTable, referenceColumn?, onDelete?, onUpdate?}.",
        )
    pair = {"sourceColumn": column, "referenceColumn": fk.get("referenceColumn", "id")}
    return foreign_key_clause({**fk, "referenceColumns": [pair]}, f"{column}.foreignKey")[2]


async def add_foreign_key(cur: AsyncCursor[DictRow], target: sql.Composable, fk: Any, where: str) -> str:
    """`ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY` for one entry; a reference Postgres refuses (no such
    table or column, no unique key to point at, types that do not match) is a 400 with Postgres's message,
    as InsForge answers, and `nextActions` naming the entry. The operation's description."""
    sources, table, clause = foreign_key_clause(fk, where)
    try:
        async with cur.connection.transaction():
            await cur.execute(sql.SQL("ALTER TABLE {} ADD {}").format(target, clause))
    except psycopg.Error as exc:
        failure = api_error_from(exc)
        if failure.status >= 500:
            raise failure from None
        pairs = ", ".join(
            f"{p.get('sourceColumn')} -> {table}.{p.get('referenceColumn')}" for p in fk["referenceColumns"]
        )
        raise ApiError(
            400,
            "DATABASE_VALIDATION_ERROR",
            failure.message,
            f"{where} ({pairs}) was refused: check that {table} exists, that the reference columns exist "
            "and are its primary key or unique, and that the source columns exist with the same types.",
        ) from None
    return f"Added foreign key constraint on column(s): {', '.join(sources)}"


def encrypted_type(column: dict[str, Any]) -> str | None:
    """The SQL type an encrypted column (`encrypted: true`) was declared with, which it is read back as; None
    for a plain column. InsForge's rules: no primary key, unique constraint or foreign key (its ciphertext
    differs each time it is written), and no default (a default would be stored as plaintext)."""
    flag = column.get("encrypted", False)
    if not isinstance(flag, bool):
        raise ApiError(
            400, "INVALID_INPUT", "encrypted: Expected boolean", "Send encrypted as true or false."
        )
    if not flag:
        return None
    name = column.get("columnName")
    declared = column.get("type")
    original = ENCRYPTABLE_TYPES.get(declared.lower()) if isinstance(declared, str) else None
    if original is None:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Column '{name}' cannot be encrypted as type {declared!r}",
            "An encrypted column takes one of string, date, datetime, integer, float, boolean, uuid, json.",
        )
    for key, message in (
        ("isPrimaryKey", "Encrypted columns cannot be primary keys"),
        ("isUnique", "Encrypted columns cannot have a unique constraint"),
        ("foreignKey", "Encrypted columns cannot have foreign key references"),
    ):
        if column.get(key):
            raise ApiError(
                400,
                "INVALID_INPUT",
                message,
                f"Leave {key} out of column '{name}', or do not encrypt it: an encrypted value is never "
                "compared by the database.",
            )
    if column.get("defaultValue") not in (None, ""):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Encrypted columns cannot have a default value",
            f"Leave defaultValue out of column '{name}': a default would be stored unencrypted.",
        )
    return original


async def mark_encrypted(
    cur: AsyncCursor[DictRow], table: str, column: str, original_type: str, key_version: int
) -> None:
    """Register a new text column as encrypted (`system.encrypted_columns`), and install the CHECK that
    refuses any value not in the ciphertext format, whoever writes it (raw SQL, RPC, imports): in the
    transaction that creates the column."""
    await cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NULL OR {} ~ {})").format(
            sql.Identifier("public", table),
            sql.Identifier(encrypted_constraint_name(column)),
            sql.Identifier(column),
            sql.Identifier(column),
            sql.Literal(STORED_FORMAT),
        )
    )
    await cur.execute(
        "select system.register_encrypted_column(%s::regclass, %s, %s, %s)",
        (sql.Identifier("public", table).as_string(cur), column, original_type, key_version),
    )


def encrypted_constraint_name(column: str) -> str:
    """InsForge's name for the ciphertext-format CHECK of a column (within Postgres's 63 characters)."""
    return f"enc_fmt_{column[:50]}"


def _column_definition(column: Any, *, adding: bool) -> tuple[str, sql.Composable, sql.Composable | None]:
    if not isinstance(column, dict):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            "each column must be an object",
            "Send each column as {columnName, type, isNullable?, isUnique?, defaultValue?, foreignKey?}.",
        )
    name = identifier(column.get("columnName"), "column")
    nullable = column.get("isNullable", True) is not False
    if encrypted_type(column) is not None:
        # Stored as text (the ciphertext), whatever type it was declared with.
        return (
            name,
            sql.SQL("{} TEXT{}").format(sql.Identifier(name), sql.SQL("" if nullable else " NOT NULL")),
            None,
        )
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

    def __init__(self, database: Database, identity: DatabaseIdentity, column_key_version: int = 1) -> None:
        self.database = database
        self.identity = identity
        #: The key version a column encrypted now is registered with (`Settings.column_key_version`).
        self.column_key_version = column_key_version

    @asynccontextmanager
    async def cursor(self, *, read_only: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A cursor in a transaction as the calling admin (a read-only one for a read that `database:read`
        reaches); a database error becomes its API error."""
        try:
            async with self.database.transaction_as(self.identity, read_only=read_only) as conn:
                yield conn.cursor(row_factory=dict_row)
        except psycopg.Error as exc:
            raise api_error_from(exc) from None

    async def list_tables(self, schema: str = "public") -> list[str]:
        async with self.cursor() as cur:
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
            if isinstance(name, str) and name in AUTO_FIELDS:  # (any other name is checked further on)
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
            sql_name = "TEXT" if column.get("encrypted") else COLUMN_TYPES.get(type_name.lower(), type_name)
            described.append({**column, "sqlType": sql_name})
        for index, fk in enumerate(_list(body, "foreignKeys")):
            constraints.append(foreign_key_clause(fk, f"foreignKeys.{index}")[2])
        definitions.append(sql.SQL("created_at TIMESTAMPTZ DEFAULT now()"))
        definitions.append(sql.SQL("updated_at TIMESTAMPTZ DEFAULT now()"))
        create = sql.SQL("CREATE TABLE {} ({})").format(
            sql.Identifier("public", table), sql.SQL(", ").join(definitions + constraints)
        )
        async with self.cursor() as cur:
            if await _relation_exists(cur, table):
                raise _duplicate_table(table)
            try:
                async with cur.connection.transaction():
                    await cur.execute(create)
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                # Another transaction made the table between the check above and this statement (Postgres
                # says so in its own words, or as a unique violation in its catalog when that transaction
                # had not yet committed): the caller gets the answer the check gives, not the catalog's.
                if await _relation_exists(cur, table):
                    raise _duplicate_table(table) from None
                raise
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
            for column in user_columns:
                original = encrypted_type(column)
                if original is not None:
                    await mark_encrypted(cur, table, column["columnName"], original, self.column_key_version)
        return {
            "message": "table created successfully",
            "tableName": table,
            "columns": described,
            "autoFields": ["id", "created_at", "updated_at"],
            "nextActions": f"You can now use the table with /api/database/records/{table}.",
        }

    async def table_schema(self, table: str) -> dict[str, Any]:
        async with self.cursor() as cur:
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
            raise ApiError(404, "DATABASE_NOT_FOUND", "table not found", LIST_TABLES)
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
            order by con.conname, array_position(con.conkey, k.col)
            """,
            (table,),
        )
        foreign: dict[str, dict[str, Any]] = {}
        constraints: dict[str, dict[str, Any]] = {}
        for row in await cur.fetchall():
            reference = (
                row["foreign_table"]
                if row["foreign_schema"] == "public"
                else f"{row['foreign_schema']}.{row['foreign_table']}"
            )
            on_delete = _ACTION_NAMES.get(row["on_delete"], "NO ACTION")
            on_update = _ACTION_NAMES.get(row["on_update"], "NO ACTION")
            foreign[row["column_name"]] = {
                "constraintName": row["name"],
                "referenceTable": reference,
                "referenceColumn": row["foreign_column"],
                "onDelete": on_delete,
                "onUpdate": on_update,
            }
            constraint = constraints.setdefault(
                row["name"],
                {
                    "constraintName": row["name"],
                    "referenceTable": reference,
                    "referenceColumns": [],
                    "onDelete": on_delete,
                    "onUpdate": on_update,
                },
            )
            pair = {"sourceColumn": row["column_name"], "referenceColumn": row["foreign_column"]}
            constraint["referenceColumns"].append(pair)
        await cur.execute(
            "select a.attname as name, e.original_type from system.encrypted_columns e "
            "join pg_attribute a on a.attrelid = e.table_oid and a.attnum = e.column_num "
            "where e.table_oid = %s::regclass",
            (sql.Identifier("public", table).as_string(cur),),
        )
        encrypted = {row["name"]: row["original_type"] for row in await cur.fetchall()}
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
            if column["name"] in encrypted:
                # As InsForge describes it: the type it was declared with (stored as text), and the flag.
                entry["type"] = _SQL_TO_TYPE[encrypted[column["name"]]]
                entry["encrypted"] = True
            described.append(entry)
        return {
            "tableName": table,
            "columns": described,
            "foreignKeys": list(constraints.values()),
            "recordCount": int(count["n"]) if count else 0,
        }

    async def update_table(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        identifier(table, "table")
        target = sql.Identifier("public", table)
        done: list[str] = []
        async with self.cursor() as cur:
            current = await self._schema(cur, table)
            encrypted = {c["columnName"] for c in current["columns"] if c.get("encrypted")}
            by_column = {c["columnName"]: c["foreignKey"] for c in current["columns"] if "foreignKey" in c}
            names = {fk["constraintName"] for fk in current["foreignKeys"]}
            for index, name in enumerate(_list(body, "dropForeignKeys")):
                # A constraint's name (InsForge), or a column with a foreign key (Kilnbase's older form).
                if not isinstance(name, str):
                    raise ApiError(
                        400,
                        "INVALID_INPUT",
                        f"dropForeignKeys.{index}: Expected string, received {zod_type(name)}",
                        "Send dropForeignKeys as the names of the constraints (GET the table's schema "
                        "lists them under foreignKeys).",
                    )
                if name in names:
                    constraint = name
                elif name in by_column:
                    constraint = by_column[name]["constraintName"]
                else:
                    raise ApiError(
                        404,
                        "DATABASE_NOT_FOUND",
                        f"Foreign key constraint '{name}' does not exist on this table.",
                        "Refresh the table schema and retry; the constraint may have already been removed.",
                    )
                await cur.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                        target, sql.Identifier(constraint)
                    )
                )
                names.discard(constraint)
                done.append(f"Dropped foreign key constraint: {constraint}")
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
                    raise ApiError(
                        400,
                        "DATABASE_INVALID_PARAMETER",
                        "updateColumns items must be objects",
                        "Send each item as {columnName, newColumnName?, defaultValue?}.",
                    )
                name = identifier(column.get("columnName"), "column")
                if name in AUTO_FIELDS:
                    raise ApiError(
                        400, "DATABASE_FORBIDDEN", "cannot update system columns", f"'{name}' is managed."
                    )
                if "defaultValue" in column:
                    if name in encrypted and column["defaultValue"] not in ("", None):
                        raise ApiError(
                            400,
                            "INVALID_INPUT",
                            "Encrypted columns cannot have a default value",
                            f"Leave defaultValue out for '{name}': a default would be stored unencrypted.",
                        )
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
            encrypted_added: set[str] = set()
            for column in _list(body, "addColumns"):
                name, definition, fk = _column_definition(column, adding=True)
                if name in AUTO_FIELDS:
                    continue
                await cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(target, definition))
                if fk is not None:
                    await cur.execute(sql.SQL("ALTER TABLE {} ADD {}").format(target, fk))
                original = encrypted_type(column)
                if original is not None:
                    await mark_encrypted(cur, table, name, original, self.column_key_version)
                    encrypted_added.add(name)
                done.append(f"Added column: {name}")
            _refuse_keys_on_encrypted(_list(body, "addForeignKeys"), encrypted_added)
            for index, item in enumerate(_list(body, "addForeignKeys")):
                if isinstance(item, dict) and "foreignKey" in item and "referenceColumns" not in item:
                    # Kilnbase's older form: `{columnName, foreignKey: {referenceTable, referenceColumn}}`.
                    name = identifier(item.get("columnName"), "column")
                    given = item["foreignKey"] if isinstance(item["foreignKey"], dict) else {}
                    pair = {"sourceColumn": name, "referenceColumn": given.get("referenceColumn", "id")}
                    item = {**given, "referenceColumns": [pair]}
                done.append(await add_foreign_key(cur, target, item, f"addForeignKeys.{index}"))
            rename = body.get("renameTable")
            if isinstance(rename, dict) and rename.get("newTableName"):
                new_table = identifier(rename["newTableName"], "table")
                await cur.execute(
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, sql.Identifier(new_table))
                )
                done.append(f"Renamed table from {table} to {new_table}")
        return {"message": "table schema updated successfully", "tableName": table, "operations": done}

    async def delete_table(self, table: str, *, hold: bool = False) -> dict[str, Any]:
        """Drop the table; with `hold` (an agent's call no person approved), raise `HeldForApproval` instead
        when it is there. The approval gate asks the same before the call runs (`database.tools`), but in a
        transaction of its own: a table made after it looked and before this one would be dropped unasked.
        Here the check and the drop are one transaction."""
        identifier(table, "table")
        async with self.cursor() as cur:
            if not await table_exists(cur, table):
                raise _no_table(table)
            if hold:
                raise HeldForApproval(drop_reason(table))
            try:
                await cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier("public", table)))
            except psycopg.errors.UndefinedTable:
                # Dropped by another request between the check and this statement (which waited for it):
                # the answer the check gives, not Postgres's own words for it.
                raise _no_table(table) from None
        return {
            "message": "table deleted successfully",
            "tableName": table,
            "nextActions": "Create a new table with POST /api/database/tables.",
        }


async def _relation_exists(cur: AsyncCursor[DictRow], table: str) -> bool:
    """Whether `public.<table>` names any relation (a table, view, sequence...): what a new table's name
    may not be."""
    await cur.execute("select to_regclass(%s) is not null as found", (f'public."{table}"',))
    row = await cur.fetchone()
    return bool(row and row["found"])


def drop_reason(table: str) -> str:
    """Why an agent's drop of `table` waits for a person."""
    return f"drops table {table} and its data"


def _no_table(table: str) -> ApiError:
    return ApiError(
        404,
        "DATABASE_NOT_FOUND",
        "table not found",
        f"There is no table {table!r}; list tables with GET /api/database/tables.",
    )


def _duplicate_table(table: str) -> ApiError:
    return ApiError(400, "DATABASE_DUPLICATE", f"table {table} already exists", "Choose a unique table name.")


async def table_exists(cur: AsyncCursor[Any], table: str) -> bool:
    """Whether `public.<table>` is a table (plain or partitioned), as the tables API knows tables."""
    await cur.execute(
        "select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and c.relname = %s and c.relkind in ('r', 'p')",
        (table,),
    )
    return await cur.fetchone() is not None


def _refuse_keys_on_encrypted(foreign_keys: list[Any], encrypted: set[str]) -> None:
    """InsForge's refusal of a foreign key on a column added encrypted in the same request."""
    for index, item in enumerate(foreign_keys):
        if not isinstance(item, dict):
            continue
        pairs = item.get("referenceColumns")
        pairs = pairs if isinstance(pairs, list) else []
        named = [p.get("sourceColumn") for p in pairs if isinstance(p, dict)]
        named.append(item.get("columnName"))
        # (only text can name a column: anything else is refused by name when the key is built)
        if encrypted & {name for name in named if isinstance(name, str)}:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"addForeignKeys.{index}.columnName: Cannot add foreign key to an encrypted column",
                "Point foreign keys at columns that are not encrypted.",
            )


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(
            400,
            "DATABASE_INVALID_PARAMETER",
            f"{key} must be an array",
            f"Send {key} as a JSON array, or leave it out.",
        )
    return value


def _plain_default(value: str | None) -> str | None:
    """`'abc'::text` -> `abc`, `0::integer`... -> `0`, as InsForge shows defaults."""
    if value is None:
        return None
    match = re.fullmatch(r"'((?:[^']|'')*)'::[\w\s]+", value)
    if match:
        return match[1].replace("''", "'")
    match = re.fullmatch(r"(.+?)::[\w\s]+", value)
    return match[1] if match else value
