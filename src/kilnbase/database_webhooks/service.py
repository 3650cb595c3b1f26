"""The service behind `/api/database/webhooks` (admin): webhooks on app tables, and their delivery logs.

Paths, shapes, codes and messages are InsForge's (`backend/src/api/routes/database/webhooks.routes.ts`,
`services/database/database-webhook.service.ts`, `shared-schemas/database-webhooks*.schema.ts`): a webhook
is `{id, name, tableName, events, url, secret, enabled, createdAt, updatedAt}`; an unknown id is 404
`NOT_FOUND` "Webhook not found"; a table that does not exist is 400 `INVALID_INPUT` `Table "x" does not
exist`. Where Kilnbase differs, on purpose:

- The secret is stored encrypted with the project's SecretBox and never answered: `secret` is a mask
  (`********`) when one is set, null when not, and `hasSecret` says which.
- Agent keys may read webhooks and their logs (`webhooks:read`) but never create, change or delete one, with
  any scope: a webhook sends every row of a table to a URL of its creator's choosing.
- Only ordinary tables in the app's schemas take a webhook (`public` by default; `schema.table` for another),
  never one of Kilnbase's own schemas or the system's.
- A trigger fires for every change and queues it only while its webhook is on and wants that event, so
  switching a webhook off or changing its events takes no lock on the app's table; creating and deleting
  one do (its trigger), and wait at most `LOCK_TIMEOUT` for a busy table (409 `TABLE_BUSY`).
- The logs of an unknown webhook are 404, where InsForge answers an empty list.

Every change, and every refused one, is audited (module `DATABASE_WEBHOOKS`), the secret only as whether one
was set, in the transaction that makes it.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import AsyncCursor, sql

from kilnbase import audit
from kilnbase.database_webhooks.definitions import WebhookFields, read
from kilnbase.db.schema_cache import HIDDEN_SCHEMAS
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor, require_person
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox

MODULE = "DATABASE_WEBHOOKS"
#: The most webhooks a project may have (and one list answers with).
MAX_WEBHOOKS = 1000
DEFAULT_LOG_LIMIT = 50
MAX_LOG_LIMIT = 500
#: How long creating or deleting a webhook waits for its table's lock.
LOCK_TIMEOUT = "5s"
SECRET_MASK = "********"  # noqa: S105 (what is answered in place of a secret)

_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def _iso(column: str) -> str:
    return f"to_char({column} at time zone 'UTC', '{_ISO}')"


_COLUMNS = (
    "id::text, name, table_schema, table_name, events, url, secret_ciphertext is not null as has_secret, "
    f"enabled, {_iso('created_at')} as created_at, {_iso('updated_at')} as updated_at"
)


def secret_context(webhook_id: str) -> str:
    return f"database_webhooks.hooks.{webhook_id}.secret"


def trigger_name(webhook_id: str) -> str:
    """The trigger of a webhook on its table (InsForge's is `_dbwh_<id>`; Kilnbase's own say so)."""
    return "kilnbase_webhook_" + uuid.UUID(webhook_id).hex


def not_found() -> ApiError:
    return ApiError(
        404,
        "NOT_FOUND",
        "Webhook not found",
        "List the webhooks with GET /api/database/webhooks; create one with POST /api/database/webhooks.",
    )


#: Why an agent key may not manage these, whatever its scopes (`require_person`).
_AGENT_REFUSAL = (
    "Agent keys may not create, change or delete database webhooks: a webhook sends every row change "
    "of a table to the URL it names."
)
_ASK_A_PERSON = "Ask the project admin to make this change (with the project's API key or the dashboard)."


def _webhook_id(value: str) -> str:
    """A webhook id is a UUID; anything else names no webhook (404, as an unknown one)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise not_found() from None


def _table_label(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def _webhook(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "tableName": _table_label(row["table_schema"], row["table_name"]),
        "events": row["events"],
        "url": row["url"],
        "secret": SECRET_MASK if row["has_secret"] else None,
        "hasSecret": row["has_secret"],
        "enabled": row["enabled"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


class DatabaseWebhooks:
    def __init__(self, database: Database, box: SecretBox) -> None:
        self._database = database
        self._box = box

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from database_webhooks.hooks order by created_at desc, id "
                f"limit {MAX_WEBHOOKS}"
            )
            rows = await cur.fetchall()
        return [_webhook(row) for row in rows]

    async def get(self, actor: Actor, webhook_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        hook_id = _webhook_id(webhook_id)
        async with self._database.as_owner() as cur:
            await cur.execute(f"select {_COLUMNS} from database_webhooks.hooks where id = %s", (hook_id,))
            row = await cur.fetchone()
        if row is None:
            raise not_found()
        return _webhook(row)

    async def create(self, actor: Actor, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new webhook, and its trigger on the table, in one transaction."""
        details: dict[str, Any] = {"name": body.get("name"), "tableName": body.get("tableName")}
        async with audit.refusals(self._database, actor, "CREATE_DATABASE_WEBHOOK", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            fields = read(body, creating=True)
            details.update(fields.summary())
            assert fields.table_name is not None and fields.events is not None
            hook_id = str(uuid.uuid4())
            details["id"] = hook_id
            secret = None
            if fields.secret is not None:
                secret = self._box.encrypt(fields.secret, context=secret_context(hook_id))
            try:
                async with self._database.as_owner() as cur:
                    await _require_capture_role(cur)
                    schema, table = await _app_table(cur, fields.table_name)
                    await cur.execute("select count(*) as n from database_webhooks.hooks")
                    counted = await cur.fetchone()
                    if counted is not None and counted["n"] >= MAX_WEBHOOKS:
                        raise ApiError(
                            409,
                            "TOO_MANY_WEBHOOKS",
                            f"A project may have at most {MAX_WEBHOOKS} database webhooks.",
                            "Delete webhooks that are no longer needed (DELETE /api/database/webhooks/:id).",
                        )
                    await cur.execute(
                        "insert into database_webhooks.hooks (id, name, table_schema, table_name, events, "
                        f"url, secret_ciphertext, enabled) values (%s, %s, %s, %s, %s, %s, %s, %s) "
                        f"returning {_COLUMNS}",
                        (
                            hook_id,
                            fields.name,
                            schema,
                            table,
                            list(fields.events),
                            fields.url,
                            secret,
                            True if fields.enabled is None else fields.enabled,
                        ),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    await cur.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
                    await cur.execute(
                        sql.SQL(
                            "create trigger {} after insert or update or delete on {}.{} for each row "
                            "execute function database_webhooks.capture({})"
                        ).format(
                            sql.Identifier(trigger_name(hook_id)),
                            sql.Identifier(schema),
                            sql.Identifier(table),
                            sql.Literal(hook_id),
                        )
                    )
                    await audit.record(cur, actor, "CREATE_DATABASE_WEBHOOK", MODULE, details)
            except psycopg.errors.LockNotAvailable:
                raise _table_busy(fields.table_name) from None
        return _webhook(row)

    async def update(self, actor: Actor, webhook_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change what is given (name, events, url, secret: null removes it, enabled): no lock on the
        table."""
        details: dict[str, Any] = {"id": webhook_id}
        async with audit.refusals(self._database, actor, "UPDATE_DATABASE_WEBHOOK", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            hook_id = _webhook_id(webhook_id)
            fields = read(body, creating=False)
            details.update({"id": hook_id, **fields.summary()})
            assignments, params = self._assignments(hook_id, fields)
            async with self._database.as_owner() as cur:
                await cur.execute(
                    f"update database_webhooks.hooks set {assignments}updated_at = now() "
                    f"where id = %s returning {_COLUMNS}",
                    (*params, hook_id),
                )
                row = await cur.fetchone()
                if row is None:
                    raise not_found()
                await audit.record(cur, actor, "UPDATE_DATABASE_WEBHOOK", MODULE, details)
        return _webhook(row)

    def _assignments(self, hook_id: str, fields: WebhookFields) -> tuple[str, builtins.list[Any]]:
        """`column = %s, ` for each field given, and the values."""
        assignments: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("name", fields.name),
            ("events", list(fields.events) if fields.events else None),
            ("url", fields.url),
            ("enabled", fields.enabled),
        ):
            if value is not None:
                assignments.append(f"{column} = %s, ")
                params.append(value)
        if fields.secret_given:
            assignments.append("secret_ciphertext = %s, ")
            params.append(
                None
                if fields.secret is None
                else self._box.encrypt(fields.secret, context=secret_context(hook_id))
            )
        return "".join(assignments), params

    async def delete(self, actor: Actor, webhook_id: str) -> None:
        """The webhook, its trigger (when its table still has it), its queued deliveries and its logs."""
        details: dict[str, Any] = {"id": webhook_id}
        async with audit.refusals(self._database, actor, "DELETE_DATABASE_WEBHOOK", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            hook_id = _webhook_id(webhook_id)
            try:
                async with self._database.as_owner() as cur:
                    await cur.execute(
                        "select name, table_schema, table_name from database_webhooks.hooks "
                        "where id = %s for update",
                        (hook_id,),
                    )
                    row = await cur.fetchone()
                    if row is None:
                        raise not_found()
                    details.update(
                        name=row["name"], tableName=_table_label(row["table_schema"], row["table_name"])
                    )
                    await cur.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
                    await _drop_triggers(cur, hook_id)
                    await cur.execute("delete from database_webhooks.hooks where id = %s", (hook_id,))
                    await audit.record(cur, actor, "DELETE_DATABASE_WEBHOOK", MODULE, details)
            except psycopg.errors.LockNotAvailable:
                raise _table_busy(details.get("tableName", "")) from None

    async def logs(
        self, actor: Actor, webhook_id: str, limit: int, offset: int
    ) -> builtins.list[dict[str, Any]]:
        """A page of the webhook's delivery attempts, newest first (InsForge's list of logs)."""
        require_admin_actor(actor)
        hook_id = _webhook_id(webhook_id)
        limit = min(max(1, limit), MAX_LOG_LIMIT)
        offset = max(0, offset)
        async with self._database.as_owner() as cur:
            await cur.execute("select 1 from database_webhooks.hooks where id = %s", (hook_id,))
            if await cur.fetchone() is None:
                raise not_found()
            await cur.execute(
                f"select id::text, webhook_id::text, delivery_id, attempt, event_type, table_name, payload, "
                f"status_code, error, success, {_iso('delivered_at')} as delivered_at "
                "from database_webhooks.logs where webhook_id = %s "
                "order by delivered_at desc, id limit %s offset %s",
                (hook_id, limit, offset),
            )
            rows = await cur.fetchall()
        return [
            {
                "id": row["id"],
                "webhookId": row["webhook_id"],
                "eventType": row["event_type"],
                "tableName": row["table_name"],
                "payload": row["payload"],
                "statusCode": row["status_code"],
                "error": row["error"],
                "success": row["success"],
                "deliveredAt": row["delivered_at"],
                "deliveryId": str(row["delivery_id"]),
                "attempt": row["attempt"],
            }
            for row in rows
        ]


def _table_busy(table: str) -> ApiError:
    return ApiError(
        409,
        "TABLE_BUSY",
        f'Table "{table}" is locked by another transaction; its webhook trigger could not be changed.',
        "Try again once the long-running transaction on that table has ended.",
    )


async def _app_table(cur: AsyncCursor[Any], name: str) -> tuple[str, str]:
    """The ordinary table `name` names: in `public`, or `schema.table` in another of the app's schemas;
    never in Kilnbase's own schemas or the system's (400, as a table that does not exist)."""
    schema, _dot, table = name.partition(".")
    await cur.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind = 'r' and n.nspname <> all(%(hidden)s) and n.nspname not like 'pg\\_%%' "
        "and ((n.nspname = 'public' and c.relname = %(name)s) "
        "or (n.nspname = %(schema)s and c.relname = %(table)s)) "
        "order by n.nspname = 'public' desc limit 1",
        {"hidden": list(HIDDEN_SCHEMAS), "name": name, "schema": schema, "table": table},
    )
    row = await cur.fetchone()
    if row is None:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f'Table "{name}" does not exist',
            "Name a table of the app (GET /api/database/tables lists them); `schema.table` for one outside "
            "public.",
        )
    return row["nspname"], row["relname"]


async def _drop_triggers(cur: AsyncCursor[Any], hook_id: str) -> None:
    """Drop the webhook's trigger wherever it is (its table may have been renamed or moved); a table that
    was dropped took it along, and there is nothing to do."""
    await cur.execute(
        "select n.nspname, c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where t.tgname = %s and t.tgfoid = 'database_webhooks.capture()'::regprocedure",
        (trigger_name(hook_id),),
    )
    for found in await cur.fetchall():
        await cur.execute(
            sql.SQL("drop trigger {} on {}.{}").format(
                sql.Identifier(trigger_name(hook_id)),
                sql.Identifier(found["nspname"]),
                sql.Identifier(found["relname"]),
            )
        )


async def _require_capture_role(cur: AsyncCursor[Any]) -> None:
    """A webhook's trigger queues through `database_webhooks.capture()`, which must run as the role that may
    only queue (migration 0240). Where the database's owner could not set that role up, the migration left
    the function SECURITY INVOKER, so that it never runs with the owner's rights; a trigger would then fail
    every change to its table (the app's roles may not write the outbox), so no webhook is made."""
    await cur.execute(
        "select p.prosecdef and p.proowner = r.oid as ready from pg_proc p "
        "left join pg_roles r on r.rolname = 'kilnbase_webhook_capture' "
        "where p.oid = 'database_webhooks.capture()'::regprocedure"
    )
    found = await cur.fetchone()
    if found is None or not found["ready"]:
        raise ApiError(
            503,
            "DATABASE_WEBHOOKS_UNAVAILABLE",
            "Database webhooks are off on this database: its owner could not set up the role "
            "kilnbase_webhook_capture that their trigger runs as.",
            "An operator sets it up once (docs/database-webhooks.md, 'When the owner may not create "
            "roles'), then creating a webhook works.",
        )
