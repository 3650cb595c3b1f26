"""The records engine: one request through PostgREST's pipeline, plain data in and out.

    api_request   the request as one value: schema, preferences, media type, range, body, caller
    *_plan        checked against the schema cache: a read, a write or a call, as plain data
    statements    the plan as one SQL statement with bound parameters
    execution     that statement in one transaction as the caller, in one round trip
    response      status, headers and body from its result row

What a request's shape decides (its parse, plan and statement) is remembered per schema snapshot
(`plan_cache`), so a repeated request is: shape lookup, remembered statement, one transaction, response.
No HTTP objects here: the route adapts Starlette to `RecordsRequest`, and the MCP server may call this too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
import psycopg
from psycopg.rows import DictRow

from kilnbase.config import RecordsSettings
from kilnbase.db import whole_table_changes
from kilnbase.db.schema_cache import SchemaCache, SchemaSnapshot
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.keys.column_cipher import ColumnCipher
from kilnbase.records import media_type, statements
from kilnbase.records.api_request import (
    ApiRequest,
    Features,
    RecordsRequest,
    RequestShape,
    api_request,
    request_shape,
    shape_key,
)
from kilnbase.records.call_plan import BodyKind, CallPlan, CallTarget, call_plan, call_target, check_call
from kilnbase.records.encrypted_columns import (
    Decryption,
    check_conditions,
    decrypt_body,
    encrypt_body,
    read_decryption,
)
from kilnbase.records.errors import RecordsError, from_statement_error
from kilnbase.records.execution import Cursor, one_row, planned_rows, run
from kilnbase.records.mutate_plan import (
    MutatePlan,
    check_upsert_row,
    delete_plan,
    insert_plan,
    update_plan,
    upsert_key,
)
from kilnbase.records.payload import (
    Payload,
    call_arguments,
    insert_payload,
    single_row_payload,
    unparsed_body_error,
)
from kilnbase.records.plan_cache import PlanCache, PreparedCall, PreparedRead, PreparedWrite
from kilnbase.records.read_plan import TableTarget, read_plan, table_target
from kilnbase.records.response import (
    RecordsResponse,
    call_response,
    check_max_affected,
    mutation_response,
    read_response,
)
from kilnbase.records.sql_builder import Sql, qualified
from kilnbase.records.statements import BODY, template

#: Errors that may only mean the snapshot is older than the catalog: reloaded once, then tried again.
STALE_SCHEMA_CODES = frozenset({"PGRST205", "PGRST202", "PGRST200", "PGRST204", "42703", "PGRST106"})
#: `Prefer: count=estimated` counts exactly up to this many rows, and trusts the planner above it.
ESTIMATE_THRESHOLD = 1000
_PLANNED_COUNTS = ("planned", "estimated")


class RecordsEngine:
    """The records API as one service: `handle` takes a request and gives its response (or raises the
    `RecordsError` that is the response)."""

    def __init__(
        self,
        database: Database,
        cache: SchemaCache,
        cipher: ColumnCipher,
        settings: RecordsSettings | None = None,
    ) -> None:
        self.database = database
        self.cache = cache
        #: Encrypts and decrypts the values of encrypted columns (`records.encrypted_columns`).
        self.cipher = cipher
        #: What is remembered for the current snapshot (replaced with it).
        self.plans = PlanCache(cache.snapshot)
        settings = settings or RecordsSettings()
        self.features = Features(
            aggregates=settings.aggregates_enabled,
            plan=settings.plan_enabled,
            tx_override=settings.tx_end.endswith("-allow-override"),
            max_rows=settings.max_rows,
        )
        #: How a transaction ends unless the request may choose and does (`Prefer: tx=`).
        self.rollback_by_default = settings.tx_end.startswith("rollback")

    async def handle(self, request: RecordsRequest) -> RecordsResponse:
        snapshot = self.cache.snapshot
        try:
            return await self._respond(request, snapshot)
        except psycopg.Error as exc:
            error = _statement_error(exc, request)
        except RecordsError as exc:
            error = exc
        if error.code not in STALE_SCHEMA_CODES:
            raise error
        fresh = await self.cache.reload_unless_fresh(time.monotonic())
        if fresh is snapshot:
            raise error
        try:
            return await self._respond(request, fresh)
        except psycopg.Error as exc:
            raise _statement_error(exc, request) from None

    def _respond(self, request: RecordsRequest, snapshot: SchemaSnapshot) -> Awaitable[RecordsResponse]:
        """PostgREST's `postgrestResponse`: the request as one value, then its action's plan, statement,
        transaction and response (which `handle` awaits: this is not a coroutine, so that it is not one
        more frame each resumption of the request's task passes through; `handle` turns a statement's
        error into PostgREST's)."""
        features = self.features
        key = shape_key(request, snapshot.schemas, features)
        if key is None:  # not to be remembered: a memory of its own, dropped with the request
            plans, shape = PlanCache(snapshot), request_shape(request, snapshot.schemas, None, features)
        else:
            plans = self.plans
            if plans.snapshot is not snapshot:  # reloaded after DDL: what was remembered goes with it
                plans = self.plans = PlanCache(snapshot)
            shape = plans.shapes.get(key) or plans.shapes.put(
                key, request_shape(request, snapshot.schemas, key, features)
            )
        api = api_request(request, shape)
        if media_type.plan_request(shape.media) is not None:
            return self._explain(api, snapshot, plans)
        if shape.action == "read":
            return self._read(api, snapshot, plans)
        if shape.action == "call":
            return self._call(api, snapshot, plans)
        return self._write(api, snapshot, plans)

    async def _read(self, api: ApiRequest, snapshot: SchemaSnapshot, plans: PlanCache) -> RecordsResponse:
        shape = api.shape
        if shape.prefs.count in _PLANNED_COUNTS:
            plan = read_plan(shape, snapshot, _table(shape, snapshot, plans))
            return await self._planned_count_read(
                api,
                plan.offset,
                statements.table_read_explained(plan),
                lambda exact: statements.table_read(plan, count_exact=exact),
                decrypt=read_decryption(plan.node, csv=plan.csv),
            )
        prepared = plans.reads.get(shape)
        if prepared is None:
            plan = read_plan(shape, snapshot, table_target(shape, snapshot))
            decrypt = read_decryption(plan.node, csv=plan.csv)
            statement = template(statements.table_read(plan, count_exact=shape.prefs.count == "exact"))
            prepared = plans.reads.put(shape, PreparedRead(plan, statement, decrypt))
        statement = prepared.statement
        cur = await self.database.statement_as_caller(
            api.principal, statement.text, statement.params, read_only=True
        )
        row = await cur.fetchone()  # after COMMIT: the whole transaction was one round trip
        assert row is not None
        if prepared.decrypt:
            row["body"] = decrypt_body(row["body"], prepared.decrypt, self.cipher)
        return read_response(api, row, prepared.plan.offset, None)

    async def _write(self, api: ApiRequest, snapshot: SchemaSnapshot, plans: PlanCache) -> RecordsResponse:
        shape = api.shape
        target = _table(shape, snapshot, plans)
        payload = self._payload(api, target)
        columns = payload.columns if payload is not None else ()
        key = (shape, columns)
        prepared = plans.writes.get(key) or plans.writes.put(
            key, _prepare_write(shape, snapshot, target, columns)
        )
        if prepared.encrypt:  # (a table with encrypted columns, and a body: never a DELETE)
            assert payload is not None
            refused = unparsed_body_error(payload)  # (parsed to be encrypted anyway: checked first)
            if refused is not None:
                raise refused
            payload = payload._replace(json=encrypt_body(payload.json, prepared.encrypt, self.cipher))
        plan = prepared.plan
        rollback = self._rollback(api)
        guard = None
        if api.principal.agent is not None and plan.kind != "insert":
            if not plan.conditions:
                raise _unfiltered_agent_write(plan)
            if not rollback:
                guard = _WholeTableGuard(plan)
        elif api.principal.agent is not None and plan.counts_inserted and not rollback:
            guard = _WholeTableGuard(plan)  # an upsert that merges updates the rows it names
        if prepared.statement is None:
            return mutation_response(api, plan, "[]", 0)

        def answer(cur: Cursor, result: DictRow | None) -> RecordsResponse:
            inserted: int | None = None
            if plan.representation or plan.counts_inserted:
                row = one_row(result)
                affected = int(row["page_total"])
                body = str(row["body"]) if plan.representation else "[]"
                if prepared.decrypt and plan.representation:
                    body = decrypt_body(body, prepared.decrypt, self.cipher)
                if plan.counts_inserted:
                    inserted = int(row["inserted"])
            else:
                affected, body = max(cur.rowcount, 0), "[]"
            check_max_affected(shape.prefs, affected)
            if guard is not None:
                guard.affected, guard.inserted = affected - (inserted or 0), inserted or 0
            return mutation_response(api, plan, body, affected, inserted)

        statement = prepared.statement.fill(payload.json if payload is not None else "")
        return await run(
            self.database,
            api.principal,
            statement,
            answer,
            read_only=False,
            check_first=plan.check_first or guard is not None,
            rollback=rollback,
            guard=guard.check if guard is not None else None,
        )

    @staticmethod
    def _payload(api: ApiRequest, target: TableTarget) -> Payload | None:
        """A write's body as the statement takes it (None for a DELETE); 405 for a method no table has."""
        action = api.shape.action
        if action == "insert":
            return insert_payload(api, target)
        if action == "update":
            return single_row_payload(api, target, as_array=False)
        if action == "upsert":
            key_values = upsert_key(target)
            payload = single_row_payload(api, target, as_array=True)
            check_upsert_row(payload.row or {}, key_values)
            return payload
        if action != "delete":
            raise RecordsError(405, "PGRST117", f"Unsupported HTTP method: {api.shape.method}")
        return None

    async def _call(self, api: ApiRequest, snapshot: SchemaSnapshot, plans: PlanCache) -> RecordsResponse:
        shape = api.shape
        target = plans.routines.get(shape) or plans.routines.put(shape, call_target(shape, snapshot))
        arguments = call_arguments(api, target)
        args = arguments.named
        # Keyed by the kind of body and which parameters the arguments name (and whether they name others,
        # or the empty name an unnamed parameter has), never by names no overload has: those are the
        # caller's choice, and the memory must not keep them.
        given, names = args.keys(), target.parameter_names
        key = (shape, arguments.kind, frozenset(given & names), not given <= names, "" in given)
        prepared = plans.calls.get(key) or plans.calls.put(
            key, _prepare_call(shape, snapshot, target, args, arguments.kind)
        )
        plan = prepared.plan
        check_call(shape, plan)
        routine = plan.routine
        args_json = arguments.whole if plan.positional else arguments.by_name
        if prepared.statement is None:
            assert plan.read is not None
            return await self._planned_count_read(
                api,
                plan.read.offset,
                statements.call_explained(plan, args_json),
                lambda exact: statements.call(plan, args_json, count_exact=exact),
                call=plan,
            )

        def answer(_cur: Cursor, result: DictRow | None) -> RecordsResponse:
            row = one_row(result)
            if plan.read is not None:
                return read_response(
                    api, row, plan.read.offset, None, single_value=plan.single_value, call=True
                )
            return call_response(
                api, row, returns_set=routine.returns_set, void=routine.return_kind == "void"
            )

        # A write is answered before COMMIT: a bad response GUC or too many rows must still roll it back.
        rollback = self._rollback(api)
        filled = prepared.statement.fill(args_json)
        guard = None
        if api.principal.agent is not None and not plan.read_only and not rollback:
            guard = _WholeTableCall(plan)
        return await run(
            self.database,
            api.principal,
            filled if guard is None else guard.before(filled),
            answer,
            read_only=plan.read_only,
            check_first=not plan.read_only,
            rollback=rollback,
            guard=guard.check if guard is not None else None,
        )

    async def _planned_count_read(
        self,
        api: ApiRequest,
        offset: int,
        explain: Sql,
        render: Callable[[bool], Sql],
        *,
        call: CallPlan | None = None,
        decrypt: Decryption = (),
    ) -> RecordsResponse:
        """A read with `Prefer: count=planned|estimated`: the planner's estimate first, in the transaction
        of the read itself, which `render(count_exact)` then renders (`estimated` counts exactly when the
        estimate is small)."""
        planned: int | None = None
        estimated = api.shape.prefs.count == "estimated"
        read_only = call is None or call.read_only
        rollback = self._rollback(api)
        guard = None
        if call is not None and api.principal.agent is not None and not read_only and not rollback:
            guard = _WholeTableCall(call)

        async def statement(cur: Cursor) -> Sql:
            nonlocal planned
            planned = await planned_rows(cur, explain)
            if guard is not None:
                await guard.count(cur)
            return render(estimated and planned is not None and planned <= ESTIMATE_THRESHOLD)

        def answer(_cur: Cursor, row: DictRow | None) -> RecordsResponse:
            single_value = call is not None and call.single_value
            result = one_row(row)
            if decrypt:
                result["body"] = decrypt_body(result["body"], decrypt, self.cipher)
            return read_response(api, result, offset, planned, single_value=single_value, call=bool(call))

        return await run(
            self.database,
            api.principal,
            statement,
            answer,
            read_only=read_only,
            check_first=not read_only,
            rollback=rollback,
            guard=guard.check if guard is not None else None,
        )

    def _rollback(self, api: ApiRequest) -> bool:
        """PostgREST's `db-tx-end`: the server's choice, unless it lets the request choose (`Prefer: tx=`,
        kept in the preferences only then)."""
        chosen = api.shape.prefs.tx
        return chosen == "rollback" if chosen else self.rollback_by_default

    async def _explain(self, api: ApiRequest, snapshot: SchemaSnapshot, plans: PlanCache) -> RecordsResponse:
        """PostgREST's execution plan (`db-plan-enabled`): the statement the request would run, explained
        in its own transaction as the caller, in the format and with the options asked for. (With
        `analyze` the statement runs; a write's transaction ends as any other's, and an agent key's write
        is refused unless it rolls back: `_agent_analyzed_write`.)"""
        shape = api.shape
        plan_request = media_type.plan_request(shape.media)
        assert plan_request is not None
        statement, read_only = self._statement_of(api, snapshot, plans)
        rollback = self._rollback(api)
        agents_write = api.principal.agent is not None and not read_only and not rollback
        if agents_write and "analyze" in plan_request.options:
            raise _agent_analyzed_write()
        options = ", ".join(
            ["FORMAT " + plan_request.format.upper(), *(o.upper() for o in plan_request.options)]
        )
        explain = Sql().add(f"EXPLAIN ({options}) ").extend(statement)
        async with self.database.as_caller(api.principal, read_only=read_only, rollback=rollback) as cur:
            await cur.execute(explain.text, explain.params)
        rows = [next(iter(row.values())) for row in await cur.fetchall()]
        if plan_request.format == "json":
            body = rows[0] if isinstance(rows[0], str) else orjson.dumps(rows[0]).decode()
        else:
            body = "\n".join(str(line) for line in rows)
        return RecordsResponse(200, "" if shape.head else body, {}, shape.media)

    def _statement_of(self, api: ApiRequest, snapshot: SchemaSnapshot, plans: PlanCache) -> tuple[Sql, bool]:
        """The statement a request runs (and whether it only reads), as its action renders it."""
        shape = api.shape
        if shape.action == "read":
            plan = read_plan(shape, snapshot, _table(shape, snapshot, plans))
            return statements.table_read(plan, count_exact=shape.prefs.count == "exact"), True
        if shape.action == "call":
            routines = call_target(shape, snapshot)
            arguments = call_arguments(api, routines)
            call = call_plan(shape, snapshot, routines, arguments.named, arguments.kind)
            args = arguments.whole if call.positional else arguments.by_name
            return statements.call(call, args, count_exact=shape.prefs.count == "exact"), call.read_only
        target = _table(shape, snapshot, plans)
        payload = self._payload(api, target)
        columns = payload.columns if payload is not None else ()
        prepared = _prepare_write(shape, snapshot, target, columns)
        if prepared.statement is None:  # an update that sets nothing: PostgREST explains an empty read
            return Sql().add(f"SELECT NULL FROM {qualified(target.table)} WHERE false"), True
        return prepared.statement.fill(payload.json if payload is not None else ""), False


def _statement_error(exc: psycopg.Error, request: RecordsRequest) -> RecordsError:
    return from_statement_error(exc, is_anonymous=request.principal.db_role == "anon")


def _table(shape: RequestShape, snapshot: SchemaSnapshot, plans: PlanCache) -> TableTarget:
    return plans.tables.get(shape) or plans.tables.put(shape, table_target(shape, snapshot))


def _unfiltered_agent_write(plan: MutatePlan, every: int | None = None) -> ApiError:
    """An agent key's DELETE or PATCH with no filter: it would touch every row its role reaches (as
    project_admin, every row). PostgREST allows it, and people keep it; for an agent it is refused rather
    than held, since no tool runs a records write for an approval to run. The SQL route to the same change
    is held: `run-raw-sql` rates DELETE or UPDATE without WHERE as DANGER, and holds SQL whose WHERE
    matched every row of a table of two or more once it ran (`db.whole_table_changes`). In InsForge's
    shape, as the other refusals of agents on this route (`http.agent_scopes`). With `every`, the request
    had a filter that matched all `every` rows (`_WholeTableGuard`), and was rolled back."""
    verb = "delete" if plan.kind == "delete" else "update"
    why = (
        "the request has no filter."
        if every is None
        else f"the filter matched all {every} rows, so nothing was changed."
    )
    return ApiError(
        403,
        "FORBIDDEN",
        f"An agent key may not {verb} every row of {plan.table.name}: {why}",
        "Add a filter naming the rows, such as ?id=eq.1; to change every row, use run-raw-sql "
        "(POST /api/database/advance/rawsql), which waits for a person's approval.",
    )


def _agent_upsert_of_every_row(plan: MutatePlan, every: int) -> ApiError:
    """An agent key's upsert (`Prefer: resolution=merge-duplicates`) that updated every one of the `every`
    rows a table held (`_WholeTableGuard`): the PATCH of every row, by another method, rolled back and
    refused as that PATCH is."""
    return ApiError(
        403,
        "FORBIDDEN",
        f"An agent key may not update every row of {plan.table.name}: the upsert updated all {every} rows "
        "it held, so nothing was changed.",
        "Send only the rows to change, so that a row is left as it was (or insert new rows without "
        "resolution=merge-duplicates); to rewrite every row, use run-raw-sql (POST "
        "/api/database/advance/rawsql), which waits for a person's approval.",
    )


def _agent_analyzed_write() -> ApiError:
    """An agent key's write (or call of a routine that may write) explained with `analyze`, in a
    transaction that commits: EXPLAIN ANALYZE runs the statement, so this would be the write itself, past
    the checks an agent's writes pass on their own path (`_unfiltered_agent_write`, `_WholeTableGuard`, and
    whatever joins them). Refused rather than checked here: the plan without `analyze` shows the statement,
    the write itself runs it, and with `Prefer: tx=rollback` (where the server allows it) the analyzed write
    changes nothing; so the refusal costs an agent nothing it needs, and no check has to be made twice.
    Reads, and people's plans, are as in PostgREST."""
    return ApiError(
        403,
        "FORBIDDEN",
        "An agent key may not run a write through its execution plan (options=analyze): EXPLAIN ANALYZE "
        "runs the write, past the checks an agent's writes pass.",
        "Ask for the plan without analyze, or with Prefer: tx=rollback where the server allows it "
        "(KILNBASE_DB_TX_END=...-allow-override); send the write itself to run it.",
    )


class _WholeTableGuard:
    """An agent key's filtered PATCH or DELETE that changed every row of a table holding more than one: a
    filter that is always true (`?id=not.is.null`, `?id=gte.0`) is the unfiltered write that
    `_unfiltered_agent_write` refuses, with a filter in front. So is an upsert (`POST` with `Prefer:
    resolution=merge-duplicates`) that updated every row the table held, whatever it inserted beside them
    (`_agent_upsert_of_every_row`): its updated rows are the rows it wrote less those it inserted (the count
    that decides its 200 or 201). Which filters are always true is not
    decidable from their text (it depends on the data), so the write itself says: it runs, and in its own
    transaction, before COMMIT, the rows it changed are compared with the rows the caller's role reaches
    (both as the caller, under the same policies). When it changed them all, it is rolled back and refused
    with the same 403; nothing is changed and nothing is held, as for the unfiltered write.

    Kept cheap: people never pay for it (one attribute check, as before); an agent's write of 0 or 1 row
    pays nothing more; else one statement in the same transaction that reads at most one row more than
    the write changed (`limit affected + 1`), so never more than the write itself read: after a DELETE,
    whether any row is left; after a PATCH (which leaves the number of rows as it was), whether the table
    has a row beyond the ones changed. Skipped when the transaction ends in ROLLBACK (`Prefer:
    tx=rollback`): nothing would change. Deleting or updating row by row stays possible, as it is for
    people and through the unfiltered rule: what this stops is one request, by mistake or by design,
    wiping or rewriting a whole table."""

    def __init__(self, plan: MutatePlan) -> None:
        self.plan = plan
        #: The rows the write deleted or updated (set by the answer, before `check`).
        self.affected = 0
        #: The rows an upsert inserted (set by the answer with `affected`, which leaves them out).
        self.inserted = 0

    async def check(self, cur: Cursor) -> None:
        if self.affected < whole_table_changes.MIN_ROWS:
            return
        table = qualified(self.plan.table)
        deleted = self.plan.kind == "delete"
        # After an upsert, the table holds the rows it inserted besides those it held: it updated them all
        # when it holds no row beyond the ones it wrote.
        written = self.affected + self.inserted
        limit = 1 if deleted else written + 1
        await cur.execute(f"select count(*) as n from (select from {table} limit %s) as reached", (limit,))
        row = await cur.fetchone()
        reached = int(row["n"]) if row is not None else 0
        if (reached == 0) if deleted else (reached <= written):
            if self.plan.kind == "insert":
                raise _agent_upsert_of_every_row(self.plan, self.affected)
            raise _unfiltered_agent_write(self.plan, every=self.affected)


def _agent_call_of_every_row(plan: CallPlan, reasons: list[str]) -> ApiError:
    """An agent key's call of a routine (`/rpc/`) that deleted or updated every row of a table
    (`_WholeTableCall`): rolled back and refused as the records write of every row is."""
    routine = plan.routine
    return ApiError(
        403,
        "FORBIDDEN",
        f"An agent key may not change every row of a table through {routine.schema}.{routine.name}: the "
        f"call {'; '.join(reasons)}, so nothing was changed.",
        "Call it with arguments that leave a row as it was; to change every row, run the call as SQL "
        f"(select {routine.schema}.{routine.name}(...)) with run-raw-sql (POST "
        "/api/database/advance/rawsql), which waits for a person's approval.",
    )


class _WholeTableCall:
    """An agent key's call of a routine that may write (`/rpc/`, not READ ONLY) that deleted or updated
    every row of a table of two or more: what `_WholeTableGuard` refuses of a PATCH or DELETE, done by the
    routine's body, which only the data can tell. The call's transaction reads Postgres's counts of the
    rows it changed before and after the call (`db.whole_table_changes`, as for an agent's raw SQL), and
    before COMMIT the call is rolled back and refused with the same 403 (no tool runs a records call for
    an approval to run; the same call as SQL through run-raw-sql waits for a person).

    People never pay for it (one attribute check); nor do an agent's reads (GET, or a STABLE or IMMUTABLE
    routine: READ ONLY) and calls that end in ROLLBACK (`Prefer: tx=rollback`). An agent's other call pays
    one catalog read before and one after, and a count for each table where it changed two rows or more."""

    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan
        self.counted: whole_table_changes.Counts = {}

    async def count(self, cur: Cursor) -> None:
        """Read the counts before the call, in its transaction."""
        self.counted = await whole_table_changes.counts(cur.connection)

    def before(self, statement: Sql) -> Callable[[Cursor], Awaitable[Sql]]:
        """`statement`, rendered in the transaction after the counts are read (`execution.run`)."""

        async def counted_first(cur: Cursor) -> Sql:
            await self.count(cur)
            return statement

        return counted_first

    async def check(self, cur: Cursor) -> None:
        reasons = await whole_table_changes.wholesale(cur.connection, self.counted)
        if reasons:
            raise _agent_call_of_every_row(self.plan, reasons)


def _prepare_write(
    shape: RequestShape, snapshot: SchemaSnapshot, target: TableTarget, columns: tuple[str, ...]
) -> PreparedWrite:
    if shape.action == "delete":
        plan = delete_plan(shape, snapshot, target)
    elif shape.action == "update":
        plan = update_plan(shape, snapshot, target, columns)
    else:
        plan = insert_plan(shape, snapshot, target, columns, upsert=shape.action == "upsert")
    table = plan.table
    if not table.encrypted:
        return PreparedWrite(plan, None if plan.is_noop else template(statements.mutation(plan, BODY)))
    check_conditions(table, plan.conditions)
    decrypt = read_decryption(plan.returning, csv=plan.csv) if plan.returning is not None else ()
    return PreparedWrite(
        plan,
        None if plan.is_noop else template(statements.mutation(plan, BODY)),
        table if plan.kind != "delete" else None,
        decrypt,
    )


def _prepare_call(
    shape: RequestShape, snapshot: SchemaSnapshot, target: CallTarget, args: dict[str, object], kind: BodyKind
) -> PreparedCall:
    plan = call_plan(shape, snapshot, target, args, kind)
    if plan.read is not None and shape.prefs.count in _PLANNED_COUNTS:
        return PreparedCall(plan, None)  # the statement depends on the planner's estimate
    return PreparedCall(plan, template(statements.call(plan, BODY, count_exact=shape.prefs.count == "exact")))
