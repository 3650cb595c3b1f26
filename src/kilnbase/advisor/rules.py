"""The advisor's rules: InsForge's 18 rule ids, each one catalog query over the app's schemas.

Each query answers rows of `affected_object, severity, title, description, recommendation`; the rule gives
its id and category. The conditions and thresholds are InsForge's
(`services/database/database-advisor.service.ts`); where Kilnbase's setup changes what a condition means,
the rule says so in its comment, and docs/advisor.md lists every difference. The app's schemas are every
schema but Kilnbase's own and Postgres's (`hidden`): what the records API exposes. The queries take three
parameters: `hidden` (text[]), `activity_seconds` (how long a session may sit idle in a transaction, or a
query run, before it is reported) and `most` (the most rows a rule reports).

`affected_object` is what a suppression of one instance names, so it is stable across scans: `schema.table`,
`schema.table (policy)`, `schema.function(args)`, `schema.table.constraint`, `schema.index`; sessions, which
come and go, are all `pg_stat_activity` (as in InsForge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Category = Literal["security", "performance", "health"]
Severity = Literal["critical", "warning", "info"]

SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
CATEGORIES: tuple[Category, ...] = ("security", "performance", "health")


@dataclass(frozen=True)
class Rule:
    id: str
    category: Category
    sql: str


def _app(schema: str) -> str:
    """`schema` (a column) is one of the app's schemas."""
    return f"({schema} <> all(%(hidden)s::text[]) and {schema} !~ '^pg_')"


def _own(oid: str) -> str:
    """`oid` (a relation) is no extension's member (an extension's tables are its author's business)."""
    return (
        "not exists (select 1 from pg_depend dep where dep.classid = 'pg_class'::regclass "
        f"and dep.objid = {oid} and dep.deptype = 'e')"
    )


def _qualified(schema: str, name: str) -> str:
    return f"quote_ident({schema}) || '.' || quote_ident({name})"


#: Roles a policy or a grant reaches clients through: PUBLIC (oid 0), anon, authenticated.
_TO_CLIENTS = (
    "(0::oid = any({roles}) or 'anon'::regrole::oid = any({roles}) "
    "or 'authenticated'::regrole::oid = any({roles}))"
)

_THIS_DATABASE = "datid = (select oid from pg_database where datname = current_database())"

# Kilnbase adds to InsForge's condition: partitioned tables too (a partitioned table is read and written
# like any other); RLS off and readable by anon is "publicly accessible", as in InsForge.
RLS_DISABLED = f"""
select n.nspname || '.' || c.relname as affected_object,
  'critical' as severity,
  case when has_table_privilege('anon', c.oid, 'SELECT') then 'Table publicly accessible'
    else 'Table accessible to all authenticated users' end as title,
  'Table ' || {_qualified("n.nspname", "c.relname")} || ' has row level security disabled and is '
    || 'exposed by the records API: ' || case when has_table_privilege('anon', c.oid, 'SELECT')
      then 'any client with the anon key' else 'any signed-in user' end
    || ' can read, and change, every row its table privileges allow.' as description,
  'ALTER TABLE ' || {_qualified("n.nspname", "c.relname")} || ' ENABLE ROW LEVEL SECURITY;' || chr(10)
    || '-- then add policies for anon and authenticated (project_admin keeps its own policy)'
    as recommendation
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relrowsecurity and {_app("n.nspname")}
  and (has_table_privilege('anon', c.oid, 'SELECT') or has_table_privilege('authenticated', c.oid, 'SELECT'))
order by 1 limit %(most)s
"""

RLS_PERMISSIVE = f"""
with policies as (
  select n.nspname as schema_name, c.relname as table_name, c.oid as table_oid, pol.polname,
    case pol.polcmd when 'r' then 'SELECT' when 'a' then 'INSERT' when 'w' then 'UPDATE'
      when 'd' then 'DELETE' else 'ALL' end as command,
    (select string_agg(case when r = 0 then 'public' else r::regrole::text end, ', ')
       from unnest(pol.polroles) as r) as roles,
    (0::oid = any(pol.polroles) or 'anon'::regrole::oid = any(pol.polroles)) as to_anon,
    regexp_replace(lower(coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')),
      '[[:space:]()]|::boolean', '', 'g') in ('true', '1=1') as open_using,
    regexp_replace(lower(coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '')),
      '[[:space:]()]|::boolean', '', 'g') in ('true', '1=1') as open_check
  from pg_policy pol
  join pg_class c on c.oid = pol.polrelid
  join pg_namespace n on n.oid = c.relnamespace
  where c.relrowsecurity and pol.polpermissive and {_app("n.nspname")}
    and {_TO_CLIENTS.format(roles="pol.polroles")}
), judged as (
  select p.*, to_anon and has_table_privilege('anon', table_oid,
    case command when 'ALL' then 'SELECT' else command end) as anon_exposed
  from policies p
  where open_using or open_check
)
select schema_name || '.' || table_name || ' (' || polname || ')' as affected_object,
  case when anon_exposed then 'critical' else 'warning' end as severity,
  case when anon_exposed then 'Permissive RLS policy exposes data to anonymous users'
    else 'Overly permissive RLS policy' end as title,
  'Policy ' || quote_ident(polname) || ' on ' || {_qualified("schema_name", "table_name")}
    || ' grants unrestricted ' || command || ' access to ' || roles
    || ' (an always-true USING or WITH CHECK).'
    || case when anon_exposed then ' The table is effectively public despite row level security.' else '' end
    as description,
  'ALTER POLICY ' || quote_ident(polname) || ' ON ' || {_qualified("schema_name", "table_name")}
    || case when command = 'INSERT' or (open_check and not open_using)
      then ' WITH CHECK ((select auth.uid()) = user_id);' else ' USING ((select auth.uid()) = user_id);' end
    || chr(10) || '-- a real condition in place of true; (select auth.uid()) is evaluated once, not per row'
    as recommendation
from judged
order by 1 limit %(most)s
"""

RLS_NO_POLICY = f"""
select n.nspname || '.' || c.relname as affected_object,
  'critical' as severity,
  'RLS enabled but no policies defined' as title,
  'Table ' || {_qualified("n.nspname", "c.relname")} || ' has row level security enabled but no '
    || 'policy at all (not even project_admin_policy): every request role is refused every row.'
    as description,
  'CREATE POLICY project_admin_policy ON ' || {_qualified("n.nspname", "c.relname")}
    || ' FOR ALL TO project_admin USING (true) WITH CHECK (true);' || chr(10)
    || 'CREATE POLICY owner_access ON ' || {_qualified("n.nspname", "c.relname")}
    || ' FOR ALL TO authenticated USING ((select auth.uid()) = user_id);' as recommendation
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and c.relrowsecurity and {_app("n.nspname")} and {_own("c.oid")}
  and not exists (select 1 from pg_policy pol where pol.polrelid = c.oid)
order by 1 limit %(most)s
"""

# InsForge reports one finding per role (anon, authenticated) under one object; Kilnbase one per function,
# naming both. The description says whether search_path is pinned.
DANGEROUS_FUNCTION = f"""
with exposed as (
  select n.nspname, p.proname, p.oid,
    n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as signature,
    array_to_string(array_remove(array[
      case when has_function_privilege('anon', p.oid, 'EXECUTE') then 'anon' end,
      case when has_function_privilege('authenticated', p.oid, 'EXECUTE') then 'authenticated' end
    ], null), ', ') as roles,
    exists (select 1 from unnest(coalesce(p.proconfig, '{{}}'::text[])) as setting
            where starts_with(setting, 'search_path=')) as pinned,
    pg_get_userbyid(p.proowner) as owner_name
  from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
  where p.prosecdef and p.prokind in ('f', 'p') and {_app("n.nspname")}
    and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
    and not exists (select 1 from pg_depend dep where dep.classid = 'pg_proc'::regclass
                    and dep.objid = p.oid and dep.deptype = 'e')
)
select signature as affected_object,
  'critical' as severity,
  'Dangerous SECURITY DEFINER function' as title,
  'Function ' || signature || ' is SECURITY DEFINER and callable by ' || roles
    || ': it runs with the rights of ' || owner_name || ', which can escalate their access'
    || case when pinned then '.'
      else ', and its search_path is not set, so a caller can substitute the objects it names.' end
    as description,
  'REVOKE EXECUTE ON FUNCTION ' || oid::regprocedure::text || ' FROM PUBLIC, anon, authenticated;' || chr(10)
    || '-- if clients must call it, keep SECURITY DEFINER only with a pinned search_path:' || chr(10)
    || 'ALTER FUNCTION ' || oid::regprocedure::text || ' SET search_path = '''';' || chr(10)
    || '-- or run it with the caller''s rights:' || chr(10)
    || 'ALTER FUNCTION ' || oid::regprocedure::text || ' SECURITY INVOKER;' as recommendation
from exposed
where roles <> ''
order by 1 limit %(most)s
"""

# Kilnbase gives every table in public a `project_admin_policy` FOR ALL; counted as InsForge counts, no table
# would ever be "SELECT only". Only the policies that reach clients (PUBLIC, anon, authenticated) count here.
RLS_SELECT_ONLY = f"""
with client_policies as (
  select pol.polrelid, pol.polcmd from pg_policy pol where {_TO_CLIENTS.format(roles="pol.polroles")}
)
select n.nspname || '.' || c.relname as affected_object,
  'info' as severity,
  'Table has only SELECT RLS policy' as title,
  'Table ' || {_qualified("n.nspname", "c.relname")} || ' has policies for clients (anon, '
    || 'authenticated) that allow SELECT only. If clients should write to it, add INSERT, UPDATE or '
    || 'DELETE policies; if it is read-only on purpose, ignore this.' as description,
  'CREATE POLICY insert_own ON ' || {_qualified("n.nspname", "c.relname")}
    || ' FOR INSERT TO authenticated WITH CHECK ((select auth.uid()) = user_id);' as recommendation
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and c.relrowsecurity and {_app("n.nspname")}
  and exists (select 1 from client_policies cp where cp.polrelid = c.oid and cp.polcmd = 'r')
  and not exists (select 1 from client_policies cp
                  where cp.polrelid = c.oid and cp.polcmd in ('a', 'w', 'd', '*'))
order by 1 limit %(most)s
"""

MISSING_FK_INDEX = f"""
select n.nspname || '.' || c.relname || '.' || con.conname as affected_object,
  'warning' as severity,
  'Foreign key column missing index' as title,
  'Column(s) ' || k.columns || ' of ' || {_qualified("n.nspname", "c.relname")} || ' (foreign key '
    || quote_ident(con.conname) || ') have no index that leads with them: joins scan the whole table, and '
    || 'every delete or key update in the referenced table scans it too, holding locks.' as description,
  'CREATE INDEX CONCURRENTLY ON ' || {_qualified("n.nspname", "c.relname")} || ' (' || k.columns || ');'
    as recommendation
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
cross join lateral (
  select string_agg(quote_ident(a.attname), ', ' order by key.position) as columns
  from unnest(con.conkey) with ordinality as key(attnum, position)
  join pg_attribute a on a.attrelid = c.oid and a.attnum = key.attnum
) k
where con.contype = 'f' and {_app("n.nspname")} and {_own("c.oid")}
  and not exists (
    select 1 from pg_index i
    where i.indrelid = c.oid and i.indisvalid
      and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(con.conkey)] = con.conkey
  )
order by 1 limit %(most)s
"""

UNUSED_INDEX = f"""
select s.schemaname || '.' || s.indexrelname as affected_object,
  'info' as severity,
  'Unused index' as title,
  'Index ' || {_qualified("s.schemaname", "s.indexrelname")} || ' on ' || quote_ident(s.relname)
    || ' has never been used (0 scans since statistics were reset) and takes '
    || pg_size_pretty(pg_relation_size(s.indexrelid)) || '; it still slows every write.' as description,
  'DROP INDEX CONCURRENTLY ' || {_qualified("s.schemaname", "s.indexrelname")} || ';' as recommendation
from pg_stat_user_indexes s
join pg_index i on i.indexrelid = s.indexrelid
where s.idx_scan = 0 and not i.indisunique and not i.indisprimary
  and pg_relation_size(s.indexrelid) > 8192
  and {_app("s.schemaname")} and {_own("s.relid")}
order by 1 limit %(most)s
"""

# Client backends against max_connections (InsForge counts every row of pg_stat_activity, background
# workers included, though they do not take a connection slot).
CONNECTION_USAGE = """
with usage as (
  select count(*)::numeric as used, current_setting('max_connections')::numeric as most_allowed
  from pg_stat_activity where backend_type = 'client backend'
)
select 'max_connections' as affected_object,
  case when used * 100 / most_allowed >= 95 then 'critical' else 'warning' end as severity,
  case when used * 100 / most_allowed >= 95 then 'Connection pool nearly exhausted'
    else 'Connection pool utilization high' end as title,
  used || ' of ' || most_allowed || ' connections in use (' || round(used * 100 / most_allowed, 1)
    || '%%); near the limit new connections are refused.' as description,
  'Look for leaks, idle-in-transaction sessions first:' || chr(10)
    || 'SELECT pid, state, application_name, query_start FROM pg_stat_activity '
    || 'WHERE state = ''idle in transaction'';' || chr(10)
    || '-- and lower the pool sizes (KILNBASE_DB_POOL_MAX) or put a pooler in front.' as recommendation
from usage
where used * 100 / most_allowed >= 80
"""

# Only this database's client sessions (InsForge looks at the whole server, other databases included).
IDLE_IN_TRANSACTION = f"""
select 'pg_stat_activity' as affected_object,
  'warning' as severity,
  'Idle transaction holding locks' as title,
  'PID ' || pid || ' (' || coalesce(nullif(application_name, ''), 'no application name') || ', role '
    || coalesce(usename, '?') || ') has been idle in a transaction for '
    || date_trunc('second', clock_timestamp() - state_change) || ': it holds its locks and keeps VACUUM from '
    || 'removing dead rows.' as description,
  'SELECT pid, usename, application_name, xact_start, query FROM pg_stat_activity WHERE pid = ' || pid || ';'
    || chr(10) || 'SELECT pg_terminate_backend(' || pid || ');  -- if it is safe to end it' || chr(10)
    || '-- and let Postgres end such sessions:' || chr(10)
    || 'ALTER DATABASE <database> SET idle_in_transaction_session_timeout = ''60s'';'
    as recommendation
from pg_stat_activity
where state in ('idle in transaction', 'idle in transaction (aborted)') and backend_type = 'client backend'
  and {_THIS_DATABASE}
  and clock_timestamp() - state_change > make_interval(secs => %(activity_seconds)s)
order by state_change limit %(most)s
"""

# This database's ratio, as InsForge's (warning under 95%, critical under 90%), judged only past 100,000 block
# reads: a new database reads its catalogs from disk, and its ratio means nothing yet.
LOW_CACHE_HIT_RATIO = """
with totals as (
  select blks_hit, blks_read, blks_hit::numeric * 100 / nullif(blks_hit + blks_read, 0) as ratio
  from pg_stat_database where datname = current_database()
)
select 'pg_stat_database' as affected_object,
  case when ratio < 90 then 'critical' else 'warning' end as severity,
  'Low buffer cache hit ratio' as title,
  'Buffer cache hit ratio is ' || round(ratio, 2) || '%% (' || blks_read || ' blocks read from disk, '
    || blks_hit || ' found in memory): queries often wait for the disk.' as description,
  'SHOW shared_buffers;  -- about a quarter of the memory is usual' || chr(10)
    || '-- with pg_stat_statements, the queries that read the most from disk:' || chr(10)
    || 'SELECT query, shared_blks_read, shared_blks_hit FROM pg_stat_statements '
    || 'ORDER BY shared_blks_read DESC LIMIT 10;' as recommendation
from totals
where blks_hit + blks_read >= 100000 and ratio < 95
"""

# Client backends only: Kilnbase's realtime holds a replication connection that is "active" for ever.
LONG_RUNNING_QUERY = f"""
with running as (
  select pid, state, query, clock_timestamp() - query_start as took
  from pg_stat_activity
  where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()
    and {_THIS_DATABASE}
    and clock_timestamp() - query_start > make_interval(secs => %(activity_seconds)s)
)
select 'pg_stat_activity' as affected_object,
  case when took > interval '30 minutes' then 'critical' else 'warning' end as severity,
  'Query running for ' || case when took >= interval '1 minute'
    then floor(extract(epoch from took) / 60) || ' minutes'
    else floor(extract(epoch from took)) || ' seconds' end as title,
  'PID ' || pid || ' has been running one query for ' || date_trunc('second', took) || ': '
    || left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 100) as description,
  'SELECT pg_cancel_backend(' || pid || ');  -- ask it to stop' || chr(10)
    || 'SELECT pg_terminate_backend(' || pid || ');  -- end the session' || chr(10)
    || '-- Kilnbase already bounds request queries (KILNBASE_STATEMENT_TIMEOUT_*); look at who runs this one.'
    as recommendation
from running
order by took desc limit %(most)s
"""

_PER_ROW_CALL = r"(auth\.(uid|jwt|role|email)|current_setting)[[:space:]]*\("
_WRAPPED_CALL = r"select[[:space:]]+(auth\.(uid|jwt|role|email)|current_setting)[[:space:]]*\("

# A call counts as wrapped only where every call is: InsForge lets one wrapped call excuse the others.
RLS_POLICY_PERF = f"""
with policies as (
  select n.nspname as schema_name, c.relname as table_name, pol.polname,
    concat_ws(' ', pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
      as expr
  from pg_policy pol
  join pg_class c on c.oid = pol.polrelid
  join pg_namespace n on n.oid = c.relnamespace
  where c.relrowsecurity and {_app("n.nspname")}
)
select schema_name || '.' || table_name || ' (' || polname || ')' as affected_object,
  'warning' as severity,
  'RLS policy re-evaluates auth/current_setting per row' as title,
  'Policy ' || quote_ident(polname) || ' on ' || {_qualified("schema_name", "table_name")}
    || ' calls auth.<function>() or current_setting() outside a subquery, so Postgres evaluates it for every '
    || 'row: ' || left(expr, 200) as description,
  'Wrap each call in a subquery, evaluated once per statement:' || chr(10)
    || '-- before: USING (auth.uid() = user_id)' || chr(10)
    || '-- after:  USING ((select auth.uid()) = user_id)' as recommendation
from policies
where regexp_replace(expr, '{_WRAPPED_CALL}', '', 'gi') ~* '{_PER_ROW_CALL}'
order by 1 limit %(most)s
"""

MISSING_RLS_INDEX = f"""
with policy_columns as (
  select pol.polrelid as table_oid, min(pol.polname) as policy_name, dep.refobjsubid as attnum
  from pg_policy pol
  join pg_depend dep on dep.classid = 'pg_policy'::regclass and dep.objid = pol.oid
    and dep.refclassid = 'pg_class'::regclass and dep.refobjid = pol.polrelid and dep.refobjsubid > 0
  group by pol.polrelid, dep.refobjsubid
)
select n.nspname || '.' || c.relname || '.' || a.attname as affected_object,
  'warning' as severity,
  'RLS policy column missing index' as title,
  'Policy ' || quote_ident(pc.policy_name) || ' on ' || {_qualified("n.nspname", "c.relname")}
    || ' filters on ' || quote_ident(a.attname) || ', which no index covers: the condition is checked '
    || 'on every query, by a sequential scan of the whole table.' as description,
  'CREATE INDEX CONCURRENTLY ON ' || {_qualified("n.nspname", "c.relname")} || ' (' || quote_ident(a.attname)
    || ');' as recommendation
from policy_columns pc
join pg_class c on c.oid = pc.table_oid
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum = pc.attnum and not a.attisdropped
where c.relkind = 'r' and c.relrowsecurity and {_app("n.nspname")}
  and not exists (
    select 1 from pg_index i
    where i.indrelid = c.oid and i.indisvalid
      and pc.attnum = any(string_to_array(i.indkey::text, ' ')::smallint[])
  )
order by 1 limit %(most)s
"""

DEAD_TUPLES = f"""
with counted as (
  select schemaname, relname, n_live_tup, n_dead_tup,
    n_dead_tup::numeric * 100 / nullif(n_live_tup + n_dead_tup, 0) as dead_ratio
  from pg_stat_user_tables
  where {_app("schemaname")}
)
select schemaname || '.' || relname as affected_object,
  case when dead_ratio > 50 then 'warning' else 'info' end as severity,
  'High dead tuple ratio' as title,
  'Table ' || {_qualified("schemaname", "relname")} || ' has ' || n_dead_tup || ' dead rows ('
    || round(dead_ratio) || '%% of ' || (n_live_tup + n_dead_tup) || '): wasted space and slower scans; '
    || 'autovacuum may be falling behind.' as description,
  'VACUUM (ANALYZE) ' || {_qualified("schemaname", "relname")} || ';' || chr(10)
    || '-- and, for a table that churns, vacuum it sooner:' || chr(10)
    || 'ALTER TABLE ' || {_qualified("schemaname", "relname")}
    || ' SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);'
    as recommendation
from counted
where n_live_tup + n_dead_tup > 1000 and n_dead_tup > 200 and dead_ratio > 20
order by n_dead_tup desc limit %(most)s
"""

STALE_STATISTICS = f"""
with counted as (
  select schemaname, relname, n_live_tup, n_mod_since_analyze,
    last_analyze is null and last_autoanalyze is null as never_analyzed,
    case when n_live_tup = 0 then 0 else n_mod_since_analyze::numeric * 100 / n_live_tup end as pct_changed
  from pg_stat_user_tables
  where {_app("schemaname")}
)
select schemaname || '.' || relname as affected_object,
  case when never_analyzed or n_mod_since_analyze > 100000 then 'warning' else 'info' end as severity,
  case when never_analyzed then 'Table never analyzed' else 'Stale table statistics' end as title,
  'Table ' || {_qualified("schemaname", "relname")} || ' has had ' || n_mod_since_analyze
    || ' rows changed since its last ANALYZE (' || n_live_tup || ' live rows, ' || round(pct_changed, 2)
    || '%% changed): the planner may choose poor plans.' as description,
  'ANALYZE ' || {_qualified("schemaname", "relname")} || ';' || chr(10)
    || 'ALTER TABLE ' || {_qualified("schemaname", "relname")}
    || ' SET (autovacuum_analyze_scale_factor = 0.02);  -- analyze it sooner from now on' as recommendation
from counted
where n_mod_since_analyze > 500 and n_live_tup > 0 and (pct_changed > 20 or never_analyzed)
order by n_mod_since_analyze desc limit %(most)s
"""

SEQUENCE_EXHAUSTION = f"""
with used as (
  select schemaname, sequencename, last_value, max_value, min_value, increment_by,
    case when increment_by > 0 then last_value::numeric * 100 / nullif(max_value, 0)
      else last_value::numeric * 100 / nullif(min_value, 0) end as pct_used
  from pg_sequences
  where {_app("schemaname")} and last_value is not null
)
select schemaname || '.' || sequencename as affected_object,
  case when pct_used >= 90 then 'critical' else 'warning' end as severity,
  'Sequence approaching exhaustion' as title,
  'Sequence ' || {_qualified("schemaname", "sequencename")} || ' has used ' || round(pct_used, 2)
    || '%% of its range (at ' || last_value || ', limit '
    || case when increment_by > 0 then max_value else min_value end
    || '); once it runs out, every insert that takes a value from it fails.' as description,
  '-- widen the column that takes its values, then the sequence:' || chr(10)
    || 'ALTER TABLE <table> ALTER COLUMN <column> TYPE bigint;' || chr(10)
    || 'ALTER SEQUENCE ' || {_qualified("schemaname", "sequencename")} || ' AS bigint;' as recommendation
from used
where pct_used >= 75
order by pct_used desc limit %(most)s
"""

# The waiting autovacuum worker and who blocks it, read with pg_blocking_pids (the same answer as InsForge's
# join of pg_locks with itself).
AUTOVACUUM_BLOCKED = f"""
select n.nspname || '.' || c.relname as affected_object,
  case when clock_timestamp() - w.query_start > interval '1 hour' then 'critical' else 'warning' end
    as severity,
  'Autovacuum blocked' as title,
  'Autovacuum of ' || {_qualified("n.nspname", "c.relname")} || ' (PID ' || w.pid
    || ') is waiting for a lock held by PID ' || array_to_string(pg_blocking_pids(w.pid), ', ') || '.'
    as description,
  'SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(' || w.pid
    || '));' || chr(10) || '-- end the blocker if it is safe: SELECT pg_terminate_backend(<pid>);'
    as recommendation
from pg_stat_activity w
join pg_locks l on l.pid = w.pid and not l.granted and l.relation is not null
join pg_class c on c.oid = l.relation
join pg_namespace n on n.oid = c.relnamespace
where w.backend_type = 'autovacuum worker' and {_THIS_DATABASE.replace("datid", "w.datid")}
  and cardinality(pg_blocking_pids(w.pid)) > 0 and {_app("n.nspname")}
order by 1 limit %(most)s
"""


def slow_query_sql(view: str) -> str:
    """slow-query over pg_stat_statements, `view` being its quoted, schema-qualified name: queries of this
    database whose mean time is over a second, slowest first (at most 10, as InsForge)."""
    return f"""
select 'query ' || queryid as affected_object,
  'warning' as severity,
  'Slow query detected' as title,
  'Query averages ' || round(mean_exec_time::numeric, 2) || ' ms over ' || calls || ' calls (total '
    || round((total_exec_time / 1000)::numeric) || ' s): '
    || left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 100) as description,
  'EXPLAIN (ANALYZE, BUFFERS) <the query>;' || chr(10)
    || '-- look for sequential scans of large tables; index the columns of its WHERE, JOIN and ORDER BY'
    as recommendation
from {view}
where calls > 0 and mean_exec_time > 1000
  and dbid = (select oid from pg_database where datname = current_database())
order by mean_exec_time desc limit 10
"""


SLOW_QUERY = "slow-query"

#: Every rule but slow-query (which needs pg_stat_statements: the service runs it when it is installed), in
#: InsForge's order.
RULES: tuple[Rule, ...] = (
    Rule("rls-disabled", "security", RLS_DISABLED),
    Rule("rls-permissive", "security", RLS_PERMISSIVE),
    Rule("rls-no-policy", "security", RLS_NO_POLICY),
    Rule("dangerous-function", "security", DANGEROUS_FUNCTION),
    Rule("rls-select-only", "security", RLS_SELECT_ONLY),
    Rule("missing-fk-index", "performance", MISSING_FK_INDEX),
    Rule("unused-index", "performance", UNUSED_INDEX),
    Rule("connection-usage", "performance", CONNECTION_USAGE),
    Rule("idle-in-transaction", "performance", IDLE_IN_TRANSACTION),
    Rule("low-cache-hit-ratio", "performance", LOW_CACHE_HIT_RATIO),
    Rule("long-running-query", "performance", LONG_RUNNING_QUERY),
    Rule("rls-policy-perf", "performance", RLS_POLICY_PERF),
    Rule("missing-rls-index", "performance", MISSING_RLS_INDEX),
    Rule("dead-tuples", "health", DEAD_TUPLES),
    Rule("stale-statistics", "health", STALE_STATISTICS),
    Rule("sequence-exhaustion", "health", SEQUENCE_EXHAUSTION),
    Rule("autovacuum-blocked", "health", AUTOVACUUM_BLOCKED),
)

#: Every rule id, slow-query included.
RULE_IDS: tuple[str, ...] = (*(rule.id for rule in RULES), SLOW_QUERY)
