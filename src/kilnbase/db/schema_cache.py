"""The schema cache: tables, columns, keys, relationships and functions the records API may expose.

Built once at start from the system catalogs (a handful of queries as the owner), then rebuilt whenever
DDL runs anywhere: migration 0002's event trigger sends `NOTIFY kilnbase_schema` on every DDL command, and
`SchemaCache.listen` holds one connection LISTENing on that channel. A lookup that misses reloads once
before it answers 404, so a table created a millisecond ago is never reported missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kilnbase.db.kilnbase_schemas import OWNED_SCHEMAS
from kilnbase.pg_listen import ConnectionLoss, notifications

log = logging.getLogger("kilnbase.records.schema")

CHANNEL = "kilnbase_schema"
#: Schemas the records API never exposes (nor names in a PGRST106 hint): Postgres's own and every schema of
#: Kilnbase's (`tests/records/test_exposed_schemas.py` checks the migrations create no other).
HIDDEN_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", *OWNED_SCHEMAS)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    category: str  # pg_type.typcategory: "S" string, "N" numeric, "U" user (json, uuid), ...
    nullable: bool
    default: str | None
    generated: bool

    @property
    def is_text(self) -> bool:
        return self.category == "S"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    schema: str
    table: str
    columns: tuple[str, ...]
    foreign_schema: str
    foreign_table: str
    foreign_columns: tuple[str, ...]


@dataclass
class Table:
    schema: str
    name: str
    kind: str  # pg_class.relkind
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    outgoing: list[ForeignKey] = field(default_factory=list)
    incoming: list[ForeignKey] = field(default_factory=list)
    #: Its encrypted columns (`system.encrypted_columns`), by name, in the table's column order (a refusal
    #: names the first): the type each was declared with. Empty for nearly every table, and then the records
    #: API does for it exactly what it did before encryption existed.
    encrypted: dict[str, str] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def is_unique(self, columns: tuple[str, ...]) -> bool:
        wanted = set(columns)
        return any(set(key) <= wanted for key in [self.primary_key, *self.unique_keys] if key)


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    has_default: bool
    relation: tuple[str, str] | None = None  # (schema, table) when the type is a table's row type


@dataclass(frozen=True)
class Routine:
    schema: str
    name: str
    parameters: tuple[Parameter, ...]
    return_type: str
    return_kind: str  # "composite" (rows), "scalar" or "void"
    returns_set: bool
    volatility: str  # "i", "s" or "v"
    return_table: tuple[str, str] | None  # (schema, table) when it returns a table's row type
    single_row: bool = False  # returns one row: not a set, or a set declared `ROWS 1`


@dataclass
class SchemaSnapshot:
    schemas: tuple[str, ...] = ()
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    routines: dict[tuple[str, str], list[Routine]] = field(default_factory=dict)
    loaded_at: float = 0.0


_SCHEMAS = """
select nspname from pg_namespace
where nspname <> all(%(hidden)s) and nspname not like 'pg\\_%%'
order by nspname
"""

_TABLES = """
select n.nspname as schema, c.relname as name, c.relkind as kind
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'v', 'm', 'f', 'p') and n.nspname = any(%(schemas)s)
"""

_COLUMNS = """
select n.nspname as schema, c.relname as table, a.attname as name,
       format_type(a.atttypid, a.atttypmod) as type, t.typcategory as category,
       not a.attnotnull as nullable,
       -- as PostgREST reads a default: a domain's, an identity's next value, none for a generated column
       case
         when t.typbasetype <> 0 and d.adbin is null then pg_get_expr(t.typdefaultbin, 0)
         when a.attidentity = 'd' then format('nextval(%%L)', pg_get_serial_sequence(
           format('%%I.%%I', n.nspname, c.relname), a.attname))
         when a.attgenerated = 's' then null
         else pg_get_expr(d.adbin, d.adrelid)
       end as default,
       a.attgenerated <> '' as generated
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
join pg_type t on t.oid = a.atttypid
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'v', 'm', 'f', 'p')
  and n.nspname = any(%(schemas)s)
order by n.nspname, c.relname, a.attnum
"""

_CONSTRAINTS = """
select con.conname as name, con.contype as type, n.nspname as schema, c.relname as table,
       array(select a.attname from unnest(con.conkey) with ordinality k(num, ord)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num order by k.ord) as columns,
       fn.nspname as foreign_schema, fc.relname as foreign_table,
       array(select a.attname from unnest(con.confkey) with ordinality k(num, ord)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.num order by k.ord)
         as foreign_columns
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
left join pg_class fc on fc.oid = con.confrelid
left join pg_namespace fn on fn.oid = fc.relnamespace
where con.contype in ('p', 'u', 'f') and n.nspname = any(%(schemas)s)
order by con.conname
"""

_UNIQUE_INDEXES = """
select n.nspname as schema, c.relname as table,
       array(select a.attname from unnest(i.indkey) with ordinality k(num, ord)
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num order by k.ord) as columns
from pg_index i
join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
where i.indisunique and i.indpred is null and not i.indisprimary and n.nspname = any(%(schemas)s)
"""

_ROUTINES = """
select n.nspname as schema, p.proname as name, p.provolatile as volatility, p.proretset as returns_set,
       format_type(p.prorettype, null) as return_type, t.typtype as return_typtype,
       rn.nspname as return_table_schema, rc.relname as return_table,
       coalesce(p.proargnames, '{}') as arg_names, p.proargmodes::text[] as arg_modes,
       array(select format_type(x, null) from unnest(p.proargtypes) with ordinality u(x, ord) order by ord)
         as input_types,
       p.pronargdefaults as defaults, not p.proretset or p.prorows = 1 as single_row,
       array(select coalesce(an.nspname, '') from unnest(p.proargtypes) with ordinality u(x, ord)
             left join pg_type at on at.oid = u.x
             left join pg_class ac on ac.oid = at.typrelid and ac.relkind in ('r', 'v', 'm', 'f', 'p')
             left join pg_namespace an on an.oid = ac.relnamespace order by u.ord) as input_relation_schemas,
       array(select coalesce(ac.relname, '') from unnest(p.proargtypes) with ordinality u(x, ord)
             left join pg_type at on at.oid = u.x
             left join pg_class ac on ac.oid = at.typrelid and ac.relkind in ('r', 'v', 'm', 'f', 'p')
             order by u.ord) as input_relations
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type t on t.oid = p.prorettype
left join pg_class rc on rc.oid = t.typrelid and rc.relkind in ('r', 'v', 'm', 'f', 'p')
left join pg_namespace rn on rn.oid = rc.relnamespace
where p.prokind = 'f' and n.nspname = any(%(schemas)s)
"""


_ENCRYPTED_COLUMNS = """
select n.nspname as schema, c.relname as table, a.attname as column, e.original_type
from system.encrypted_columns e
join pg_class c on c.oid = e.table_oid
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = e.table_oid and a.attnum = e.column_num and not a.attisdropped
where n.nspname = any(%(schemas)s)
order by c.oid, a.attnum
"""


_VIEW_SOURCES = """
select distinct v.nspname as schema, vc.relname as view, tn.nspname as table_schema, t.relname as table
from pg_class vc
join pg_namespace v on v.oid = vc.relnamespace
join pg_rewrite r on r.ev_class = vc.oid
join pg_depend d on d.objid = r.oid and d.classid = 'pg_rewrite'::regclass
    and d.refclassid = 'pg_class'::regclass
join pg_class t on t.oid = d.refobjid and t.relkind in ('r', 'p', 'v', 'm', 'f') and t.oid <> vc.oid
join pg_namespace tn on tn.oid = t.relnamespace
where vc.relkind in ('v', 'm') and v.nspname = any(%(schemas)s)
"""


def _inherit_view_keys(snapshot: SchemaSnapshot, rows: list[dict[str, Any]]) -> None:
    """Give a view the keys and foreign keys of the one table it reads, for the columns it keeps by name.

    PostgREST follows view columns back to their tables so embedding works through views; this covers the
    common shape (a view over one table that keeps the key columns' names), without parsing the view."""
    sources: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in rows:
        sources.setdefault((row["schema"], row["view"]), []).append((row["table_schema"], row["table"]))
    for view_key, bases in sources.items():
        view = snapshot.tables.get(view_key)
        base = snapshot.tables.get(bases[0]) if len(bases) == 1 else None
        if view is None or base is None or base.kind in ("v", "m"):
            continue
        kept = set(view.columns)
        if base.primary_key and set(base.primary_key) <= kept:
            view.primary_key = base.primary_key
        view.unique_keys.extend(k for k in base.unique_keys if set(k) <= kept)
        for key in list(base.outgoing):
            if set(key.columns) <= kept:
                inherited = ForeignKey(
                    key.name,
                    view.schema,
                    view.name,
                    key.columns,
                    key.foreign_schema,
                    key.foreign_table,
                    key.foreign_columns,
                )
                view.outgoing.append(inherited)
                target = snapshot.tables.get((key.foreign_schema, key.foreign_table))
                if target is not None:
                    target.incoming.append(inherited)
        for key in list(base.incoming):
            if set(key.foreign_columns) <= kept:
                inherited = ForeignKey(
                    key.name, key.schema, key.table, key.columns, view.schema, view.name, key.foreign_columns
                )
                view.incoming.append(inherited)
                source = snapshot.tables.get((key.schema, key.table))
                if source is not None:
                    source.outgoing.append(inherited)


async def load_snapshot(conn: AsyncConnection[Any]) -> SchemaSnapshot:
    """Read the catalogs into a fresh snapshot (a few cheap queries)."""
    started = time.monotonic()  # before the first catalog read: what `reload_unless_fresh` relies on
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SCHEMAS, {"hidden": list(HIDDEN_SCHEMAS)})
    schemas = [row["nspname"] for row in await cur.fetchall()]
    args = {"schemas": schemas}
    snapshot = SchemaSnapshot(schemas=tuple(schemas), loaded_at=started)
    await cur.execute(_TABLES, args)
    for row in await cur.fetchall():
        snapshot.tables[(row["schema"], row["name"])] = Table(row["schema"], row["name"], row["kind"])
    await cur.execute(_COLUMNS, args)
    for row in await cur.fetchall():
        table = snapshot.tables.get((row["schema"], row["table"]))
        if table is not None:
            table.columns[row["name"]] = Column(
                row["name"], row["type"], row["category"], row["nullable"], row["default"], row["generated"]
            )
    await cur.execute(_CONSTRAINTS, args)
    for row in await cur.fetchall():
        table = snapshot.tables.get((row["schema"], row["table"]))
        if table is None:
            continue
        columns = tuple(row["columns"])
        if row["type"] == "p":
            table.primary_key = columns
        elif row["type"] == "u":
            table.unique_keys.append(columns)
        else:
            key = ForeignKey(
                row["name"],
                row["schema"],
                row["table"],
                columns,
                row["foreign_schema"],
                row["foreign_table"],
                tuple(row["foreign_columns"]),
            )
            table.outgoing.append(key)
            target = snapshot.tables.get((key.foreign_schema, key.foreign_table))
            if target is not None:
                target.incoming.append(key)
    await cur.execute(_UNIQUE_INDEXES, args)
    for row in await cur.fetchall():
        table = snapshot.tables.get((row["schema"], row["table"]))
        if table is not None and tuple(row["columns"]) not in table.unique_keys:
            table.unique_keys.append(tuple(row["columns"]))
    await cur.execute(_ENCRYPTED_COLUMNS, args)
    for row in await cur.fetchall():
        table = snapshot.tables.get((row["schema"], row["table"]))
        if table is not None:
            table.encrypted[row["column"]] = row["original_type"]
    await cur.execute(_VIEW_SOURCES, args)
    _inherit_view_keys(snapshot, await cur.fetchall())
    await cur.execute(_ROUTINES, args)
    for row in await cur.fetchall():
        routine = _routine(row)
        snapshot.routines.setdefault((routine.schema, routine.name), []).append(routine)
    return snapshot


def _routine(row: dict[str, Any]) -> Routine:
    input_types: list[str] = row["input_types"]
    names: list[str] = row["arg_names"]
    modes: list[str] | None = row["arg_modes"]
    if modes is None:
        input_names = (names + [""] * len(input_types))[: len(input_types)]
    else:
        input_names = [
            name for name, mode in zip(names or [""] * len(modes), modes, strict=False) if mode in "ibv"
        ]
    first_default = len(input_types) - row["defaults"]
    relations = list(zip(row["input_relation_schemas"], row["input_relations"], strict=False))
    parameters = tuple(
        Parameter(
            name,
            type_,
            index >= first_default,
            relations[index] if index < len(relations) and relations[index][1] else None,
        )
        for index, (name, type_) in enumerate(zip(input_names, input_types, strict=False))
    )
    if row["return_type"] == "void":
        kind = "void"
    elif row["return_typtype"] == "c" or row["return_type"] == "record":
        kind = "composite"
    else:
        kind = "scalar"
    table = (row["return_table_schema"], row["return_table"]) if row["return_table"] else None
    return Routine(
        row["schema"],
        row["name"],
        parameters,
        row["return_type"],
        kind,
        row["returns_set"],
        row["volatility"],
        table,
        row["single_row"],
    )


class SchemaCache:
    """The current snapshot, and the machinery that keeps it current."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self.snapshot = SchemaSnapshot()
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        self._loss = ConnectionLoss("schema cache listener", log)

    async def reload(self) -> SchemaSnapshot:
        async with self._lock:
            return await self._load()

    async def _load(self) -> SchemaSnapshot:
        async with self._pool.connection() as conn:
            self.snapshot = await load_snapshot(conn)
        return self.snapshot

    async def reload_unless_fresh(self, since: float) -> SchemaSnapshot:
        """A snapshot whose reading began at or after `since` (monotonic time of a lookup miss).

        A reload already running may have read the catalogs before the DDL the caller depends on was
        committed, so only one that started after the miss is good enough; reloads never overlap."""
        async with self._lock:
            if self.snapshot.loaded_at >= since:
                return self.snapshot
            return await self._load()

    async def start(self) -> None:
        await self.reload()
        self._listener = asyncio.create_task(self._listen(), name="kilnbase-schema-listener")

    async def stop(self) -> None:
        self._stopping = True
        listener, self._listener = self._listener, None
        # Cancelled until it is done: Python 3.11's `asyncio.wait_for` (which psycopg waits with) drops a
        # cancellation that arrives as its inner wait completes, and the listener would then listen on.
        while listener is not None and not listener.done():
            listener.cancel()
            await asyncio.wait([listener], timeout=0.1)

    async def _listen(self) -> None:
        """LISTEN on the DDL channel; reconnect after a lost connection (with a pause)."""
        while not self._stopping:
            try:
                async with await AsyncConnection.connect(str(self._pool.conninfo), autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self.reload()  # anything that changed while not listening
                    self._loss.connected()
                    async for _notify in notifications(conn):
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                await asyncio.sleep(self._loss.lost(exc))
