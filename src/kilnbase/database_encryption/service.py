"""The registry of encrypted columns (`system.encrypted_columns`, migration 0300) and key rotation.

Listing reads the registry as the calling admin (project_admin may read it, never write it). Rotation is the
operator's second step after raising `KILNBASE_COLUMN_KEY_VERSION` on every process: each value not written
under the current version is decrypted with its own version's key and written again under the current one,
one column per transaction, as the owner (who reaches every row whatever its policies), with the app's
triggers off for the rewrite (`session_replication_role = replica`): the plaintext does not change, so no
`updated_at` moves and no webhook fires. The table is locked against writes while its column is rewritten.
Agent keys may list, never rotate: rotation follows a change of the server's environment, which only an
operator makes.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow, dict_row

from kilnbase import audit
from kilnbase.database_encryption.definitions import (
    ENCRYPT_ACTION,
    MODULE,
    ROTATE_ACTION,
    column_of,
    listed_column,
    rotation_summary,
)
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.keys.column_cipher import ENCRYPTABLE_TYPES, STORED_FORMAT, ColumnCipher, ColumnDecryptionError

#: How many values one statement rewrites.
BATCH = 1000
#: The SQL types a column may be encrypted from (`format_type` names), as the registry records them.
ENCRYPTABLE_SQL_TYPES = {
    **{sql_type: sql_type for sql_type in ENCRYPTABLE_TYPES.values()},
    "timestamp with time zone": "timestamptz",
}
SYSTEM_COLUMNS = ("id", "created_at", "updated_at")

_REGISTRY = """
select e.id, n.nspname as table_schema, c.relname as table_name, a.attname as column_name,
       e.original_type, e.key_version, e.created_at
from system.encrypted_columns e
join pg_class c on c.oid = e.table_oid
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = e.table_oid and a.attnum = e.column_num and not a.attisdropped
order by 2, 3, 4
"""
_ONE_AT_A_TIME = "select pg_advisory_xact_lock(hashtext('kilnbase.encrypted_columns.rotate'))"


def _undecryptable(schema: str, table: str, column: str) -> ApiError:
    return ApiError(
        409,
        "DATABASE_CONFLICT",
        f"A value of {schema}.{table}.{column} cannot be decrypted with this project's keys; nothing of "
        "that column was rewritten.",
        "Find the value with raw SQL (a value written in the format by hand, or copied from another project) "
        "and set it again through the records API, then rotate again.",
    )


class ColumnEncryption:
    def __init__(self, database: Database, cipher: ColumnCipher, schema_cache: SchemaCache) -> None:
        self.database = database
        self.cipher = cipher
        self.schema_cache = schema_cache

    async def list(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.database.transaction_as(actor.principal, read_only=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_REGISTRY)
            rows = await cur.fetchall()
        return {"encryptedColumns": [listed_column(row) for row in rows]}

    async def rotate(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        details: list[dict[str, Any]] = []
        state: dict[str, Any] = {"keyVersion": self.cipher.current_version, "columns": details}
        async with audit.refusals(self.database, actor, ROTATE_ACTION, MODULE, state):
            refuse_agent_keys(
                actor,
                "An agent key may not rotate the encryption of columns.",
                "Ask an operator: rotation follows a change of KILNBASE_COLUMN_KEY_VERSION on every "
                "server process, then POST /api/database/encryption/rotate with the project's API key.",
            )
            async with self.database.as_owner() as cur:
                await cur.execute(_REGISTRY)
                columns = await cur.fetchall()
            for column in columns:
                count = await self._rotate_column(column)
                details.append(
                    {
                        "table": f"{column['table_schema']}.{column['table_name']}",
                        "column": column["column_name"],
                        "rowsReEncrypted": count,
                    }
                )
        summary = rotation_summary(details)
        await audit.record(
            self.database,
            actor,
            ROTATE_ACTION,
            MODULE,
            {**state, "totalReEncrypted": summary["totalReEncrypted"]},
        )
        return summary

    async def encrypt_existing(self, actor: Actor, table: str, body: dict[str, Any]) -> dict[str, Any]:
        """InsForge's `encrypt-column`: an existing column of a public table, its values and all, becomes
        encrypted in one transaction, with the table locked: converted to text as the records API answers
        the value (JSON for `json`), its default dropped (it would be stored as plaintext), every value
        encrypted, then the CHECK and the registry entry. An agent key may not: it rewrites every row of
        the table, which an agent does only with a person (as a migration, or raw SQL, held for one)."""
        require_admin_actor(actor)
        column = column_of(body)
        details: dict[str, Any] = {"tableName": table, "column": column}
        async with audit.refusals(self.database, actor, ENCRYPT_ACTION, MODULE, details):
            refuse_agent_keys(
                actor,
                "An agent key may not encrypt an existing column: it rewrites every row of the table.",
                "Add a new column with encrypted: true (update-table-schema) and write its values through "
                "the records API, or ask a person to encrypt this one.",
            )
            async with self.database.as_owner() as cur:
                found = await _column_to_encrypt(cur, table, column)
                original = _original_type(found, table, column)
                target, value = sql.Identifier("public", table), sql.Identifier(column)
                await cur.execute(sql.SQL("lock table {} in access exclusive mode").format(target))
                await cur.execute("set local session_replication_role = replica")
                await _to_text(cur, target, value, original, has_default=found["has_default"])
                details["originalType"] = original
                details["rowsMigrated"] = await self._encrypt_values(cur, target, value)
                await cur.execute(
                    sql.SQL("alter table {} add constraint {} check ({} is null or {} ~ {})").format(
                        target,
                        sql.Identifier(f"enc_fmt_{column[:50]}"),
                        value,
                        value,
                        sql.Literal(STORED_FORMAT),
                    )
                )
                await cur.execute(
                    "insert into system.encrypted_columns "
                    "(table_oid, column_num, original_type, key_version) values (%s, %s, %s, %s)",
                    (found["table_oid"], found["column_num"], original, self.cipher.current_version),
                )
                # Said here: in `replica` mode the event trigger that tells every schema cache of DDL does not
                # fire, and a process that did not hear would answer the column's ciphertext.
                await cur.execute("select pg_notify('kilnbase_schema', 'ENCRYPT COLUMN')")
                await audit.record(cur, actor, ENCRYPT_ACTION, MODULE, details)
        await self.schema_cache.reload()
        return {
            "success": True,
            "message": f'Column "{column}" in table "{table}" has been encrypted',
            "rowsMigrated": details["rowsMigrated"],
        }

    async def _encrypt_values(
        self, cur: AsyncCursor[DictRow], target: sql.Identifier, value: sql.Identifier
    ) -> int:
        """Encrypt every value of the column, in batches. The rows are read through a cursor opened before
        the first update, so each row is met once, by the address it had then."""
        encrypted = 0
        query = sql.SQL("select ctid::text as id, {c} as value from {t} where {c} is not null")
        async with cur.connection.cursor(name="kilnbase_encrypt_column", row_factory=dict_row) as rows:
            await rows.execute(query.format(t=target, c=value))
            while batch := await rows.fetchmany(BATCH):
                await _write_back(cur, target, value, batch, [self.cipher.encrypt(r["value"]) for r in batch])
                encrypted += len(batch)
        return encrypted

    async def _rotate_column(self, column: DictRow) -> int:
        schema, table, name = column["table_schema"], column["table_name"], column["column_name"]
        target = sql.Identifier(schema, table)
        value = sql.Identifier(name)
        prefix = f"v{self.cipher.current_version}:"
        rewritten = 0
        async with self.database.as_owner() as cur:
            await cur.execute(_ONE_AT_A_TIME)
            await cur.execute("set local session_replication_role = replica")
            await cur.execute(sql.SQL("lock table {} in share row exclusive mode").format(target))
            while True:
                batch = await _older_values(cur, target, value, prefix)
                if not batch:
                    break
                rewritten_values = []
                for row in batch:
                    try:
                        rewritten_values.append(self.cipher.encrypt(self.cipher.decrypt(row["value"])))
                    except ColumnDecryptionError:
                        raise _undecryptable(schema, table, name) from None
                await _write_back(cur, target, value, batch, rewritten_values)
                rewritten += len(batch)
            await cur.execute(
                "update system.encrypted_columns set key_version = %s, updated_at = now() where id = %s",
                (self.cipher.current_version, column["id"]),
            )
        return rewritten


async def _write_back(
    cur: AsyncCursor[DictRow],
    target: sql.Identifier,
    value: sql.Identifier,
    rows: list[DictRow],
    values: list[str],
) -> None:
    """Set the column of each row (by its `id`, a ctid read in this transaction) to its new value."""
    await cur.execute(
        sql.SQL(
            "update {t} set {c} = v.value from unnest(%s::tid[], %s::text[]) as v(id, value) "
            "where {t}.ctid = v.id"
        ).format(t=target, c=value),
        ([row["id"] for row in rows], values),
    )


async def _to_text(
    cur: AsyncCursor[DictRow],
    target: sql.Identifier,
    value: sql.Identifier,
    original: str,
    *,
    has_default: bool,
) -> None:
    """The column as text: each value as the records API answers it (a `json` value as its JSON text), and
    without its default. What Postgres refuses (a view or a CHECK over the column) is a 400 with its words."""
    as_text = sql.SQL("{}::text" if original == "jsonb" else "to_json({}) #>> '{{}}'").format(value)
    try:
        async with cur.connection.transaction():
            if has_default:
                await cur.execute(
                    sql.SQL("alter table {} alter column {} drop default").format(target, value)
                )
            await cur.execute(
                sql.SQL("alter table {} alter column {} type text using {}").format(target, value, as_text)
            )
    except psycopg.Error as exc:
        message = exc.diag.message_primary or "the column cannot be changed to text"
        raise ApiError(
            400,
            "DATABASE_VALIDATION_ERROR",
            f"The column cannot be encrypted: {message}",
            "Drop what depends on the column's type (a view, a CHECK, an index over it), then encrypt it.",
        ) from None


async def _column_to_encrypt(cur: AsyncCursor[DictRow], table: str, column: str) -> DictRow:
    """The column as the catalog has it (404 when the public table has no such column; 409 when it is
    encrypted already; 400 when it is a key or a table of anyone's but project_admin's)."""
    await cur.execute(
        """
        select c.oid as table_oid, a.attnum as column_num, format_type(a.atttypid, null) as type,
               a.atthasdef as has_default, c.relowner = 'project_admin'::regrole as owned,
               exists (select 1 from system.encrypted_columns e
                       where e.table_oid = c.oid and e.column_num = a.attnum) as encrypted,
               exists (select 1 from pg_constraint k
                       where k.conrelid = c.oid and k.contype in ('p', 'u', 'f') and a.attnum = any(k.conkey))
               or exists (select 1 from pg_constraint k
                          where k.confrelid = c.oid and k.contype = 'f' and a.attnum = any(k.confkey))
               or exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique
                          and a.attnum = any(i.indkey)) as keyed
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where n.nspname = 'public' and c.relname = %s and c.relkind in ('r', 'p') and a.attname = %s
        """,
        (table, column),
    )
    found = await cur.fetchone()
    if found is None:
        raise ApiError(
            404,
            "DATABASE_NOT_FOUND",
            f'Column "{column}" not found in table "{table}"',
            f"List the table's columns with GET /api/database/tables/{table}/schema.",
        )
    if found["encrypted"]:
        raise ApiError(
            409,
            "ALREADY_EXISTS",
            f'Column "{column}" is already encrypted',
            "List encrypted columns with GET /api/database/encryption.",
        )
    if found["keyed"] or not found["owned"] or column in SYSTEM_COLUMNS:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f'Column "{column}" of "{table}" cannot be encrypted: it is a system column, part of a key, '
            "or of a table project_admin does not own",
            "Encrypt a column that no primary key, unique constraint or foreign key uses, of a table made "
            "through the API or as project_admin.",
        )
    return found


def _original_type(found: DictRow, table: str, column: str) -> str:
    original = ENCRYPTABLE_SQL_TYPES.get(found["type"])
    if original is None:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f'Column "{column}" of "{table}" cannot be encrypted as type {found["type"]}',
            "An encrypted column holds text, date, timestamptz, integer, double precision, boolean, uuid or "
            "jsonb values.",
        )
    return original


async def _older_values(
    cur: AsyncCursor[DictRow], target: sql.Identifier, value: sql.Identifier, prefix: str
) -> list[DictRow]:
    """The next values not written under the current key version (the ones rewritten are current, so
    each batch is the next one)."""
    await cur.execute(
        sql.SQL(
            "select ctid::text as id, {c} as value from {t} "
            "where {c} is not null and pg_catalog.starts_with({c}, %s) is not true limit %s"
        ).format(t=target, c=value),
        (prefix, BATCH),
    )
    return await cur.fetchall()
