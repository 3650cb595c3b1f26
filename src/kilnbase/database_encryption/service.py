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

from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow, dict_row

from kilnbase import audit
from kilnbase.database_encryption.definitions import (
    MODULE,
    ROTATE_ACTION,
    listed_column,
    rotation_summary,
)
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, refuse_agent_keys, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.keys.column_cipher import ColumnCipher, ColumnDecryptionError

#: How many values one statement rewrites.
BATCH = 1000

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
    def __init__(self, database: Database, cipher: ColumnCipher) -> None:
        self.database = database
        self.cipher = cipher

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
                ids, rewritten_values = [], []
                for row in batch:
                    try:
                        plaintext = self.cipher.decrypt(row["value"])
                    except ColumnDecryptionError:
                        raise _undecryptable(schema, table, name) from None
                    ids.append(row["id"])
                    rewritten_values.append(self.cipher.encrypt(plaintext))
                await cur.execute(
                    sql.SQL(
                        "update {t} set {c} = v.value from unnest(%s::tid[], %s::text[]) as v(id, value) "
                        "where {t}.ctid = v.id"
                    ).format(t=target, c=value),
                    (ids, rewritten_values),
                )
                rewritten += len(batch)
            await cur.execute(
                "update system.encrypted_columns set key_version = %s, updated_at = now() where id = %s",
                (self.cipher.current_version, column["id"]),
            )
        return rewritten


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
