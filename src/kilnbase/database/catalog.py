"""Catalog listings for admins: schemas, functions, indexes, policies and triggers of a schema."""

from __future__ import annotations

from typing import Any

from kilnbase.db.session import Database

_SCHEMAS = """
select nspname as name from pg_namespace
where nspname not like 'pg\\_%%' and nspname not in ('information_schema')
order by nspname
"""

_FUNCTIONS = """
select p.proname as "functionName", pg_get_function_identity_arguments(p.oid) as "arguments",
       format_type(p.prorettype, null) as "returnType", l.lanname as "language",
       case p.provolatile when 'i' then 'IMMUTABLE' when 's' then 'STABLE' else 'VOLATILE' end
         as "volatility",
       p.prosecdef as "securityDefiner", pg_get_functiondef(p.oid) as "functionDef"
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
where n.nspname = %s and p.prokind = 'f'
  -- an extension's functions (pgvector's, in public) are not the project's, as InsForge lists them
  and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
order by p.proname
"""

_INDEXES = """
select t.relname as "tableName", i.relname as "indexName", pg_get_indexdef(i.oid) as "indexDef",
       x.indisunique as "isUnique", x.indisprimary as "isPrimary"
from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid
join pg_namespace n on n.oid = t.relnamespace
where n.nspname = %s
order by t.relname, i.relname
"""

_POLICIES = """
select tablename as "tableName", policyname as "policyName", cmd as "cmd", roles::text[] as "roles",
       qual as "qual", with_check as "withCheck", permissive as "permissive"
from pg_policies where schemaname = %s
order by tablename, policyname
"""

_TRIGGERS = """
select c.relname as "tableName", t.tgname as "triggerName", pg_get_triggerdef(t.oid) as "triggerDef",
       t.tgenabled <> 'D' as "enabled"
from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %s and not t.tgisinternal
order by c.relname, t.tgname
"""


async def _rows(database: Database, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    async with database.as_owner() as cur:
        await cur.execute(query, params)
        return [dict(row) for row in await cur.fetchall()]


async def schemas(database: Database) -> dict[str, Any]:
    return {"schemas": [row["name"] for row in await _rows(database, _SCHEMAS)]}


async def schema_exists(database: Database, schema: str) -> bool:
    return bool(await _rows(database, "select 1 from pg_namespace where nspname = %s", (schema,)))


async def functions(database: Database, schema: str) -> dict[str, Any]:
    return {"functions": await _rows(database, _FUNCTIONS, (schema,))}


async def indexes(database: Database, schema: str) -> dict[str, Any]:
    return {"indexes": await _rows(database, _INDEXES, (schema,))}


async def policies(database: Database, schema: str) -> dict[str, Any]:
    return {"policies": await _rows(database, _POLICIES, (schema,))}


async def triggers(database: Database, schema: str) -> dict[str, Any]:
    return {"triggers": await _rows(database, _TRIGGERS, (schema,))}
