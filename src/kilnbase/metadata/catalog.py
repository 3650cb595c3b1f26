"""What the database holds, read from the system catalogs as the caller (the admin's `project_admin` role on
the request pool): tables and views with their row counts, RLS state and what `anon` may do; one table in
full; and a fingerprint of every user schema.

Each reading is one statement: an agent asks for metadata often, and a project with a hundred tables must not
cost a hundred round trips. Row counts use `query_to_xml`, which runs a `count(*)` per table inside the same
statement, as the caller (so the caller's rights decide), for tables the planner thinks are small; a large
table's count is the planner's estimate, marked as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow

from kilnbase.db.schema_cache import HIDDEN_SCHEMAS

#: Tables counted by one statement.
_COUNTS_PER_STATEMENT = 200
#: Below this many estimated rows a table's count is exact; above it, the planner's estimate.
EXACT_COUNT_LIMIT = 100_000

#: Tables and views of one schema: row count, RLS state, and which commands `anon` and `authenticated` can
#: run on them (a grant, and RLS off or a permissive policy for the command that names the role or PUBLIC).
_RELATIONS = """
with rel as (
  select c.oid, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.reltuples
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = %(schema)s and c.relkind in ('r', 'p', 'v', 'm', 'f')
    and (%(name)s::text is null or c.relname = %(name)s::text)
  order by c.relname
  limit %(limit)s
), access as (
  select rel.oid, r.role, cmd.name as cmd,
         has_table_privilege(r.role, rel.oid, cmd.name)
         and (not rel.relrowsecurity or rel.relkind not in ('r', 'p') or exists (
           select 1 from pg_policy p
           where p.polrelid = rel.oid and p.polpermissive
             and p.polcmd in ('*', case cmd.name when 'SELECT' then 'r' when 'INSERT' then 'a'
                                                 when 'UPDATE' then 'w' else 'd' end)
             and (0 = any(p.polroles) or (select oid from pg_roles where rolname = r.role) = any(p.polroles))
         )) as allowed
  from rel
  cross join (values ('anon'), ('authenticated')) as r(role)
  cross join (values ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE')) as cmd(name)
  where exists (select 1 from pg_roles where rolname = r.role)
)
select rel.relname as name,
       case rel.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'f' then 'foreign table'
                        else 'table' end as kind,
       rel.relrowsecurity as rls, rel.relforcerowsecurity as rls_forced,
       case when rel.relkind in ('r', 'p', 'm') and rel.reltuples >= %(exact)s then rel.reltuples::bigint
            when not has_table_privilege(rel.oid, 'SELECT') then greatest(rel.reltuples, 0)::bigint
       end as row_count,
       has_table_privilege(rel.oid, 'SELECT') as readable,
       (rel.relkind in ('r', 'p', 'm') and rel.reltuples >= %(exact)s)
         or not has_table_privilege(rel.oid, 'SELECT') as row_count_estimated,
       coalesce((select array_agg(a.cmd order by a.cmd) from access a
                 where a.oid = rel.oid and a.role = 'anon' and a.allowed), '{}') as anon,
       coalesce((select array_agg(a.cmd order by a.cmd) from access a
                 where a.oid = rel.oid and a.role = 'authenticated' and a.allowed), '{}') as authenticated
from rel
order by rel.relname
"""

_COLUMNS = """
select c.relname as table, a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
       information_schema._pg_char_max_length(a.atttypid, a.atttypmod) as max_length,
       not a.attnotnull as nullable, pg_get_expr(d.adbin, d.adrelid) as default,
       a.attidentity <> '' as identity, a.attgenerated <> '' as generated
from pg_attribute a
join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where n.nspname = %(schema)s and c.relname = any(%(tables)s) and a.attnum > 0 and not a.attisdropped
order by c.relname, a.attnum
"""

_CONSTRAINTS = """
select c.relname as table, con.conname as name, con.contype as type,
       pg_get_constraintdef(con.oid) as definition,
       array(select att.attname from unnest(con.conkey) with ordinality as k(attnum, pos)
             join pg_attribute att on att.attrelid = con.conrelid and att.attnum = k.attnum order by k.pos)
         as columns,
       fn.nspname as foreign_schema, fc.relname as foreign_table,
       array(select att.attname from unnest(con.confkey) with ordinality as k(attnum, pos)
             join pg_attribute att on att.attrelid = con.confrelid and att.attnum = k.attnum order by k.pos)
         as foreign_columns,
       case con.confdeltype when 'a' then 'NO ACTION' when 'r' then 'RESTRICT' when 'c' then 'CASCADE'
                            when 'n' then 'SET NULL' when 'd' then 'SET DEFAULT' end as on_delete,
       case con.confupdtype when 'a' then 'NO ACTION' when 'r' then 'RESTRICT' when 'c' then 'CASCADE'
                            when 'n' then 'SET NULL' when 'd' then 'SET DEFAULT' end as on_update
from pg_constraint con
join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
left join pg_class fc on fc.oid = con.confrelid left join pg_namespace fn on fn.oid = fc.relnamespace
where n.nspname = %(schema)s and c.relname = any(%(tables)s)
order by c.relname, con.conname
"""

_INCOMING = """
select c.relname as table, con.conname as name, fc.relname as foreign_table,
       array(select att.attname from unnest(con.conkey) with ordinality as k(attnum, pos)
             join pg_attribute att on att.attrelid = con.conrelid and att.attnum = k.attnum order by k.pos)
         as columns,
       array(select att.attname from unnest(con.confkey) with ordinality as k(attnum, pos)
             join pg_attribute att on att.attrelid = con.confrelid and att.attnum = k.attnum order by k.pos)
         as foreign_columns
from pg_constraint con
join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
join pg_class fc on fc.oid = con.confrelid join pg_namespace fn on fn.oid = fc.relnamespace
where con.contype = 'f' and n.nspname = %(schema)s and fn.nspname = %(schema)s
order by c.relname, con.conname
"""

_POLICIES = """
select tablename as table, policyname as name, permissive, cmd, roles::text[] as roles, qual,
       with_check as "withCheck"
from pg_policies where schemaname = %(schema)s and tablename = any(%(tables)s)
order by tablename, policyname
"""

_INDEXES = """
select t.relname as table, i.relname as name, pg_get_indexdef(i.oid) as definition, x.indisunique as unique,
       x.indisprimary as primary
from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid
join pg_namespace n on n.oid = t.relnamespace
where n.nspname = %(schema)s and t.relname = any(%(tables)s)
order by t.relname, i.relname
"""

_TRIGGERS = """
select c.relname as table, t.tgname as name, pg_get_triggerdef(t.oid) as definition,
       t.tgenabled <> 'D' as enabled
from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %(schema)s and c.relname = any(%(tables)s) and not t.tgisinternal
order by c.relname, t.tgname
"""

_VIEW_DEFINITION = """
select c.relname as table, pg_get_viewdef(c.oid, true) as definition
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = %(schema)s and c.relname = any(%(tables)s) and c.relkind in ('v', 'm')
"""

_ROUTINES = """
select p.proname as name, pg_get_function_identity_arguments(p.oid) as arguments,
       case when p.proretset then 'setof ' else '' end || format_type(p.prorettype, null) as returns
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname = %(schema)s and p.prokind = 'f'
  and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
order by p.proname, 2
limit %(limit)s
"""

#: Everything DDL can change in the user schemas, folded into one digest: relations (kind, RLS), columns,
#: constraints, indexes, policies, triggers, grants, views' and functions' definitions, and the schemas.
_FINGERPRINT = """
with user_ns as (
  select oid, nspname, nspacl from pg_namespace
  where nspname <> all(%(hidden)s) and nspname not like 'pg\\_%%'
)
select md5(coalesce(string_agg(item, E'\\n' order by item), '')) as fingerprint from (
  select concat_ws('|', 'n', n.nspname, n.nspacl) as item from user_ns n
  union all
  select concat_ws('|', 'c', n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                   c.relacl,
                   case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end)
  from pg_class c join user_ns n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S', 'i', 'c')
  union all
  select concat_ws('|', 'a', c.oid::regclass, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attacl)
  from pg_attribute a join pg_class c on c.oid = a.attrelid join user_ns n on n.oid = c.relnamespace
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')
  union all
  select concat_ws('|', 'k', con.conrelid::regclass, con.contype, con.conname, pg_get_constraintdef(con.oid))
  from pg_constraint con join user_ns n on n.oid = con.connamespace
  union all
  select concat_ws('|', 'i', pg_get_indexdef(x.indexrelid))
  from pg_index x join pg_class c on c.oid = x.indrelid join user_ns n on n.oid = c.relnamespace
  union all
  select concat_ws('|', 'p', p.schemaname, p.tablename, p.policyname, p.permissive, p.cmd, p.roles, p.qual,
                   p.with_check)
  from pg_policies p where p.schemaname in (select nspname from user_ns)
  union all
  select concat_ws('|', 't', pg_get_triggerdef(t.oid), t.tgenabled)
  from pg_trigger t join pg_class c on c.oid = t.tgrelid join user_ns n on n.oid = c.relnamespace
  where not t.tgisinternal
  union all
  select concat_ws('|', 'f', p.oid::regprocedure, md5(pg_get_functiondef(p.oid)), p.proacl)
  from pg_proc p join user_ns n on n.oid = p.pronamespace
  where p.prokind in ('f', 'p')
  union all
  select concat_ws('|', 'y', t.oid::regtype, t.typtype,
                   (select string_agg(e.enumlabel, ',' order by e.enumsortorder) from pg_enum e
                    where e.enumtypid = t.oid))
  from pg_type t join user_ns n on n.oid = t.typnamespace
  where t.typtype in ('e', 'd')
) as items
"""

#: Bytes of every relation of the user schemas.
_SIZE = """
select coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint as bytes
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname <> all(%(hidden)s) and n.nspname not like 'pg\\_%%' and c.relkind in ('r', 'p', 'm')
"""


async def relations(
    cur: AsyncCursor[DictRow], schema: str, limit: int, name: str | None = None
) -> list[DictRow]:
    """Tables and views of `schema` (or the one called `name`), by name, with their row counts."""
    await cur.execute(
        _RELATIONS, {"schema": schema, "limit": limit, "exact": EXACT_COUNT_LIMIT, "name": name}
    )
    rows = await cur.fetchall()
    # Views are not counted: counting one runs it, whatever it costs.
    to_count = [
        row
        for row in rows
        if row["row_count"] is None and row["readable"] and row["kind"] in ("table", "materialized view")
    ]
    counts: dict[str, int] = {}
    for start in range(0, len(to_count), _COUNTS_PER_STATEMENT):
        chunk = to_count[start : start + _COUNTS_PER_STATEMENT]
        query = sql.SQL(" union all ").join(
            sql.SQL("select {} as name, count(*) as n from {}").format(
                sql.Literal(row["name"]), sql.Identifier(schema, row["name"])
            )
            for row in chunk
        )
        await cur.execute(query)
        counts.update({found["name"]: int(found["n"]) for found in await cur.fetchall()})
    for row in rows:
        if row["name"] in counts:
            row["row_count"] = counts[row["name"]]
    return rows


async def fingerprint(cur: AsyncCursor[DictRow]) -> str:
    await cur.execute(_FINGERPRINT, {"hidden": list(HIDDEN_SCHEMAS)})
    row = await cur.fetchone()
    return str(row["fingerprint"])[:16] if row else ""


async def size_in_bytes(cur: AsyncCursor[DictRow]) -> int:
    await cur.execute(_SIZE, {"hidden": list(HIDDEN_SCHEMAS)})
    row = await cur.fetchone()
    return int(row["bytes"]) if row else 0


async def routines(cur: AsyncCursor[DictRow], schema: str, limit: int) -> list[DictRow]:
    await cur.execute(_ROUTINES, {"schema": schema, "limit": limit})
    return await cur.fetchall()


async def details(cur: AsyncCursor[DictRow], schema: str, tables: Sequence[str]) -> dict[str, list[DictRow]]:
    """Columns, constraints, policies, indexes, triggers and view definitions of `tables`, by kind."""
    params: dict[str, Any] = {"schema": schema, "tables": list(tables)}
    found: dict[str, list[DictRow]] = {}
    for kind, query in (
        ("columns", _COLUMNS),
        ("constraints", _CONSTRAINTS),
        ("policies", _POLICIES),
        ("indexes", _INDEXES),
        ("triggers", _TRIGGERS),
        ("views", _VIEW_DEFINITION),
    ):
        await cur.execute(query, params)
        found[kind] = await cur.fetchall()
    return found


async def schema_foreign_keys(cur: AsyncCursor[DictRow], schema: str) -> list[DictRow]:
    await cur.execute(_INCOMING, {"schema": schema})
    return await cur.fetchall()
