"""Which tables an agent's SQL changed wholesale: every row a table held before the SQL ran was deleted or
updated, in a table that held at least `MIN_ROWS`.

The migration risk rating reads SQL's text, so it holds `DELETE` or `UPDATE` with no WHERE (or a WHERE that
names no column); a WHERE that names a column and is true for every row (`WHERE id IS NOT NULL`), or an
upsert of a table's own rows (`INSERT ... SELECT ... FROM t ON CONFLICT DO UPDATE`), does the same, and only
the data can say so. So the SQL runs, in its transaction, and before COMMIT Postgres's own count of the rows
this transaction inserted, updated and deleted in each table (`pg_stat_xact_user_tables`) is compared with
the rows the table holds now:

- the rows it held before = the rows now - inserted + deleted (exact: a row put back after a delete, or
  inserted and then deleted, is counted on both sides);
- they were all changed when updated + deleted reaches that number. A row updated twice, or a row the SQL
  inserted and then updated, counts twice: such SQL may be held when it left a row as it was. That errs on
  the side of holding, and a person decides.

Postgres's counts also hold those of the connection's earlier transactions that it has not yet reported
(it reports at most once a second), so they are read once before the SQL (`counts`) and subtracted. A
partition's rows count with its partitioned table's. Kilnbase's own schemas are left out: SQL that changes
their rows is held by its text already (`database.custom_migrations.agent_risks`).

Also read around an agent key's call of a routine on the records API (`records.service._WholeTableCall`),
whose body may do the same: hence in `db/`, below both capabilities.

Cheap: people never pay (the callers check `Actor.is_unapproved_agent`); an agent's SQL pays one catalog
read before and one after, and, for each table where it changed at least `MIN_ROWS` rows, one count that
reads at most one row more than the SQL itself inserted and changed there (`limit`).

Not seen: row changes in a subtransaction that was rolled back (a plpgsql block's `EXCEPTION` clause) still
count as made, so inserts there make the rows before look fewer than they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from kilnbase.db.kilnbase_schemas import OWNED_SCHEMAS

#: The fewest rows a table holds for a change of all of them to wait: the only row of a table is what SQL
#: naming one row changes. The records API's checks of an agent's writes use it too.
MIN_ROWS = 2
#: Kilnbase's own schemas, whose rows the SQL's text decides about.
OWN_SCHEMAS = OWNED_SCHEMAS

# Each table with a change counted, and the table whose rows it counts towards: itself, or the partitioned
# table at the root of its partition tree (a partitioned table holds no rows of its own). `countable`: the
# caller's role may read the table's rows (a count selects no column: any column's privilege will do).
_COUNTS = """
select s.relid::int8 as relid, s.n_tup_ins as inserted, s.n_tup_upd as updated, s.n_tup_del as deleted,
  r.oid::int8 as root, rn.nspname::text as schema, r.relname::text as name, r.relkind = 'p' as partitioned,
  pg_catalog.has_any_column_privilege(r.oid, 'SELECT') as countable
from pg_catalog.pg_stat_xact_user_tables as s
join pg_catalog.pg_class as r on r.oid = coalesce(pg_catalog.pg_partition_root(s.relid), s.relid)
join pg_catalog.pg_namespace as rn on rn.oid = r.relnamespace
where s.n_tup_ins + s.n_tup_upd + s.n_tup_del > 0 and rn.nspname <> all(%s)
"""


@dataclass
class _Changes:
    schema: str
    name: str
    partitioned: bool
    countable: bool
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


Counts = dict[int, tuple[int, int, int]]


async def counts(conn: AsyncConnection[Any]) -> Counts:
    """The rows inserted, updated and deleted in each table as Postgres counts them now: read before the
    SQL runs, and given to `wholesale`."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_COUNTS, (list(OWN_SCHEMAS),))
    return {row["relid"]: (row["inserted"], row["updated"], row["deleted"]) for row in await cur.fetchall()}


async def wholesale(conn: AsyncConnection[Any], before: Counts) -> list[str]:
    """Why the SQL run since `before` was read needs a person (empty: it does not): for each table it
    deleted or updated every row of, which one and how many rows. Read in the SQL's own transaction, before
    COMMIT, as the same role."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_COUNTS, (list(OWN_SCHEMAS),))
    tables: dict[int, _Changes] = {}
    for row in await cur.fetchall():
        inserted, updated, deleted = before.get(row["relid"], (0, 0, 0))
        table = tables.setdefault(
            row["root"], _Changes(row["schema"], row["name"], row["partitioned"], row["countable"])
        )
        table.inserted += row["inserted"] - inserted
        table.updated += row["updated"] - updated
        table.deleted += row["deleted"] - deleted
    reasons = []
    for table in tables.values():
        changed = table.updated + table.deleted
        if changed < MIN_ROWS:
            continue
        label = f"{table.schema}.{table.name}"
        if not table.countable:
            reasons.append(
                f"deletes or updates {changed} rows of {label}, whose rows this role cannot count to tell "
                "whether any row is left as it was"
            )
            continue
        # Every row held before was changed when rows now - inserted + deleted <= changed.
        most = changed + table.inserted - table.deleted
        if most < 0:
            continue
        await cur.execute(
            sql.SQL("select count(*) as n from (select from {only}{table} limit %s) as reached").format(
                only=sql.SQL("" if table.partitioned else "only "),
                table=sql.Identifier(table.schema, table.name),
            ),
            (most + 1,),
        )
        counted = await cur.fetchone()
        now = int(counted["n"]) if counted is not None else 0
        held_before = now - table.inserted + table.deleted
        if now <= most and held_before >= MIN_ROWS:
            reasons.append(f"deletes or updates every row of {label} (all {held_before} rows it held)")
    return reasons
