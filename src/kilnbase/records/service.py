"""The records engine end to end: a request as plain data in, a response as plain data out.

grammar (`query_grammar`, `preferences`) -> plan (`read_plan`) -> SQL (`sql_builder`) -> one statement run as
the caller (`Database.as_caller`, READ ONLY for reads) -> status, headers and body (`response_shape`).
No HTTP objects here: the route adapts Starlette to `RecordsRequest`, and the MCP server may call this too.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import chain
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

import orjson
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.db.schema_cache import Routine, SchemaCache, SchemaSnapshot, Table
from kilnbase.db.session import Database
from kilnbase.identity.principal import Principal
from kilnbase.records import response_shape
from kilnbase.records.errors import RecordsError, from_database_error, valid_header
from kilnbase.records.preferences import Preferences, parse_preferences
from kilnbase.records.query_grammar import (
    Filter,
    QueryParams,
    parse_query,
    parse_range_header,
)
from kilnbase.records.read_plan import ReadNode, build_read_plan, find_table
from kilnbase.records.sql_builder import (
    MUTATION_CTE,
    Source,
    Sql,
    call_source,
    cte_source,
    delete_statement,
    explain_statement,
    function_read_statement,
    function_source,
    insert_statement,
    read_statement,
    table_source,
    update_statement,
    with_response_gucs,
)

#: `Prefer: count=estimated` counts exactly up to this many rows, and trusts the planner above it.
ESTIMATE_THRESHOLD = 1000
#: Entries remembered per schema snapshot (request shapes, statements, call plans); emptied when full.
READ_PLAN_CACHE_SIZE = 2048

_T = TypeVar("_T")


@dataclass
class RecordsRequest:
    method: str
    resource: str
    is_rpc: bool
    query_string: str  # as received: the caches are keyed by it, so a repeated URL is not parsed again
    headers: Mapping[str, str]  # lower-case names; `prefer` joined with ","
    body: bytes
    principal: Principal

    @cached_property
    def content_type(self) -> str:
        """The body's media type, without parameters, in lower case (JSON when none is given)."""
        return self.headers.get("content-type", "application/json").split(";")[0].strip().lower()

    @cached_property
    def query(self) -> list[tuple[str, str]]:
        """The query string's (name, value) pairs, decoded."""
        pairs = parse_qsl(self.query_string, keep_blank_values=True)
        if any("\x00" in key or "\x00" in value for key, value in pairs):
            raise RecordsError(400, "PGRST100", "NUL characters are not allowed in the query string")
        return pairs


@dataclass
class RecordsResponse:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = response_shape.JSON


class RecordsEngine:
    def __init__(self, database: Database, cache: SchemaCache) -> None:
        self.database = database
        self.cache = cache

    async def handle(self, request: RecordsRequest) -> RecordsResponse:
        snapshot = self.cache.snapshot
        try:
            return await self._handle(request, snapshot)
        except RecordsError as exc:
            if exc.code not in ("PGRST205", "PGRST202", "PGRST200", "PGRST204", "42703", "PGRST106"):
                raise
            fresh = await self.cache.reload_unless_fresh(time.monotonic())
            if fresh is snapshot:
                raise
            return await self._handle(request, fresh)

    async def _handle(self, request: RecordsRequest, snapshot: SchemaSnapshot) -> RecordsResponse:
        try:
            return await self._dispatch(request, snapshot)
        except psycopg.Error as exc:
            # Every statement runs in `Database.as_caller`; whatever fails there is PostgREST's error body.
            raise _translate(exc, request.principal.db_role == "anon") from None

    async def _dispatch(self, request: RecordsRequest, snapshot: SchemaSnapshot) -> RecordsResponse:
        method = request.method.upper()
        # Everything but the body and the caller: what the schema, preferences and media type (and, for a
        # read, the statement) depend on. A repeated request shape reuses them from the snapshot.
        key = (method, request.is_rpc, request.resource, request.query_string, *request.headers.items())
        shape = _memoized(
            snapshot,
            key,
            lambda: _Shape(
                key,
                _schema_of(request, snapshot, method not in ("GET", "HEAD")),
                parse_preferences([request.headers.get("prefer", "")]),
                response_shape.negotiate(request.headers.get("accept")),
            ),
        )
        schema, prefs, media = shape.schema, shape.prefs, shape.media
        if request.is_rpc:
            return await self._call(request, snapshot, shape)
        if method in ("GET", "HEAD") and prefs.count not in ("planned", "estimated"):
            return await self._cached_read(request, snapshot, shape)
        table, query = _parsed(snapshot, schema, request)
        if method in ("GET", "HEAD"):
            return await self._read(request, snapshot, table, query, prefs, media)
        if method == "POST":
            return await self._insert(request, snapshot, table, query, prefs, media)
        if method == "PATCH":
            return await self._update(request, snapshot, table, query, prefs, media)
        if method == "PUT":
            return await self._put(request, snapshot, table, query, prefs, media)
        if method == "DELETE":
            return await self._delete(request, snapshot, table, query, prefs, media)
        raise RecordsError(405, "PGRST117", f"Unsupported HTTP method: {method}")

    # -----------------------------------------------------------------------------------------------------
    # reads

    async def _cached_read(
        self, request: RecordsRequest, snapshot: SchemaSnapshot, shape: _Shape
    ) -> RecordsResponse:
        """A read whose statement depends only on the request's shape: rendered once per schema snapshot."""
        prefs = shape.prefs

        def render() -> tuple[str, tuple[Any, ...], int]:
            table = find_table(snapshot, shape.schema, request.resource)
            node = build_read_plan(snapshot, table, parse_query(request.query))
            offset, limit = _page(request, node)
            statement = read_statement(
                node,
                table_source(table, node.alias),
                count_exact=prefs.count == "exact",
                limit=limit,
                offset=offset,
            )
            return statement.text, tuple(statement.params), offset

        text, params, offset = _memoized(snapshot, ("read", shape.key), render)
        async with self._transaction(request, read_only=True) as cur:
            await cur.execute(text, params)
        row = await cur.fetchone()  # after COMMIT: the whole transaction was one round trip
        assert row is not None
        return _read_response(request, row, offset, None, prefs, shape.media, single_value=False)

    async def _read(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
    ) -> RecordsResponse:
        node = build_read_plan(snapshot, table, query)
        source = table_source(table, node.alias)
        return await self._run_read(request, node, source, prefs, media, None)

    async def _run_read(
        self,
        request: RecordsRequest,
        node: ReadNode,
        source: Source,
        prefs: Preferences,
        media: str,
        prefix: Sql | None,
        *,
        read_only: bool = True,
        single_value: bool = False,
        call: tuple[Sql, Sql] | None = None,
    ) -> RecordsResponse:
        """`call`: the source is that function call (`call_source`), whose response GUCs and max-affected
        apply; the statement then reads it through `function_read_statement`."""
        offset, limit = _page(request, node)
        count = prefs.count
        planned: int | None = None

        async def render(cur: AsyncCursor[DictRow]) -> Sql:
            nonlocal planned
            if count in ("planned", "estimated"):
                planned = await _planned_rows(cur, node, source, prefix)
            exact = count == "exact" or (
                count == "estimated" and planned is not None and planned <= ESTIMATE_THRESHOLD
            )
            if call is not None:
                return function_read_statement(node, *call, count_exact=exact, limit=limit, offset=offset)
            return read_statement(node, source, count_exact=exact, limit=limit, offset=offset, prefix=prefix)

        async def answer(cur: AsyncCursor[DictRow]) -> RecordsResponse:
            row = await cur.fetchone()
            assert row is not None
            return _read_response(
                request, row, offset, planned, prefs, media, single_value=single_value, call=call is not None
            )

        return await self._execute(
            request, render, answer, read_only=read_only, check_first=call is not None and not read_only
        )

    # -----------------------------------------------------------------------------------------------------
    # writes

    def _payload(
        self, request: RecordsRequest, table: Table, query: QueryParams, *, allow_array: bool
    ) -> tuple[list[dict[str, Any]], list[str], str]:
        """Rows, the columns they set, and the rows as one JSON array. Applies InsForge's "" quirk.

        The JSON body is passed on as received when nothing had to be dropped from it (the common case),
        so a bulk insert is not serialized twice."""
        content_type = request.content_type
        rows: Any
        if content_type == "text/csv":
            text = request.body.decode("utf-8", errors="replace")
            rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
            is_array = True
        elif content_type in (
            "application/json",
            "",
            "application/x-www-form-urlencoded",
        ) or content_type.endswith("+json"):
            if content_type == "application/x-www-form-urlencoded":
                rows = dict(parse_qsl(request.body.decode("utf-8", errors="replace"), keep_blank_values=True))
            else:
                try:
                    rows = orjson.loads(request.body or b"{}")
                except orjson.JSONDecodeError as exc:
                    raise RecordsError(400, "PGRST102", "Empty or invalid json", str(exc)) from None
            is_array = isinstance(rows, list)
            if isinstance(rows, dict):
                rows = [rows]
        else:
            raise RecordsError(415, "PGRST102", f"Content-Type not acceptable: {content_type}")
        # Rows come from orjson, csv or dict(): plain dicts, so their types are checked in C, not per row.
        if not isinstance(rows, list) or not set(map(type, rows)) <= {dict}:
            raise RecordsError(
                400,
                "PGRST102",
                "All object keys must match",
                "The body must be an object or an array of objects",
            )
        if is_array and not allow_array:
            raise RecordsError(400, "PGRST102", "Invalid body", "The body must be a single JSON object")
        untouched = content_type not in ("text/csv", "application/x-www-form-urlencoded")
        if b'""' in request.body or not untouched:
            for row in rows:
                for key in [k for k, v in row.items() if v == ""]:
                    column = table.columns.get(key)
                    if column is not None and not column.is_text:
                        del row[key]
                        untouched = False
        if query.columns is not None:
            columns = list(query.columns)
        else:
            # Every key of every row, first seen first. Usually all rows have the first row's keys, which a
            # set union (in C) confirms faster than walking every key in order.
            first = list(rows[0]) if rows else []
            if set().union(*rows) == set(first):
                columns = first
            else:
                columns = list(dict.fromkeys(chain.from_iterable(rows)))
        _check_columns(table, columns)
        if untouched and request.body.strip():
            text = request.body.decode()
            rows_json = text if is_array else f"[{text}]"
        else:
            rows_json = orjson.dumps(rows).decode()
        return rows, columns, rows_json

    async def _insert(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
        *,
        put_conflict: tuple[str, ...] | None = None,
    ) -> RecordsResponse:
        unparsed = _unparsed_rows(request, table, query) if put_conflict is None else None
        if unparsed is not None:
            columns, rows_json = unparsed
        else:
            # Not the parsed rows: they must not outlive the parse, let alone wait for the database (a bulk
            # insert's thousands of young objects would be walked by every garbage collection meanwhile).
            columns, rows_json = self._payload(request, table, query, allow_array=put_conflict is None)[1:]
        resolution = "merge-duplicates" if put_conflict is not None else prefs.resolution
        conflict: tuple[str, ...] | None = None
        if resolution is not None:
            conflict = put_conflict or query.on_conflict or table.primary_key
            for name in conflict:
                if name not in table.columns:
                    raise RecordsError(400, "42703", f"column {table.name}.{name} does not exist")
            if not conflict and resolution == "merge-duplicates":
                raise RecordsError(
                    400,
                    "PGRST100",
                    f"'{table.name}' has no primary key: name the conflict target with on_conflict=",
                )
        representation = _wants_rows(prefs, media)
        missing_default = prefs.missing == "default"
        key = ("insert", table.schema, table.name, tuple(columns), conflict, resolution, missing_default)
        statement = _cached_statement(
            snapshot,
            (*key, representation),
            rows_json,
            lambda body: insert_statement(
                table,
                columns,
                body,
                conflict_columns=conflict,
                resolution=resolution,
                missing_default=missing_default,
                returning=representation,
            ),
        )
        status = 200 if put_conflict is not None else 201
        return await self._run_mutation(
            request, snapshot, table, query, prefs, media, statement, representation, status, insert=True
        )

    async def _update(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
    ) -> RecordsResponse:
        rows, columns, _ = self._payload(request, table, query, allow_array=False)
        representation = _wants_rows(prefs, media)
        if not columns:
            _root_conditions(table, query)  # still checked, as for any write
            return _mutation_response(request, prefs, media, "[]", 0, representation, 200, insert=False)
        statement = _cached_statement(
            snapshot,
            ("update", table.schema, table.name, request.query_string, tuple(columns), representation),
            orjson.dumps(rows[0]).decode(),
            lambda body: update_statement(
                table, table.name, columns, body, _root_conditions(table, query), returning=representation
            ),
        )
        return await self._run_mutation(
            request, snapshot, table, query, prefs, media, statement, representation, 200, insert=False
        )

    async def _delete(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
    ) -> RecordsResponse:
        conditions = _root_conditions(table, query)
        representation = _wants_rows(prefs, media)
        statement = delete_statement(table, table.name, conditions, returning=representation)
        return await self._run_mutation(
            request, snapshot, table, query, prefs, media, statement, representation, 200, insert=False
        )

    async def _put(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
    ) -> RecordsResponse:
        if () in query.limit or () in query.offset:
            raise RecordsError(400, "PGRST114", "limit/offset querystring parameters are not allowed for PUT")
        filters = query.conditions.get((), [])
        pk = table.primary_key
        eq_values: dict[str, str] = {}
        for condition in filters:
            if (
                isinstance(condition, Filter)
                and not condition.field.json_path
                and condition.operation.operator == "eq"
                and not condition.operation.negated
            ):
                eq_values[condition.field.name] = str(condition.operation.value)
            else:
                eq_values = {}
                break
        if not pk or set(eq_values) != set(pk) or len(filters) != len(pk):
            raise RecordsError(
                405, "PGRST105", "Filters must include all and only primary key columns with 'eq' operators"
            )
        rows, _, _ = self._payload(request, table, query, allow_array=False)
        row = rows[0] if rows else {}
        for name in pk:
            if name not in row or _plain(row[name]) != eq_values[name]:
                raise RecordsError(
                    400, "PGRST115", "Payload values do not match URL in primary key column(s)"
                )
        return await self._insert(request, snapshot, table, query, prefs, media, put_conflict=pk)

    async def _run_mutation(
        self,
        request: RecordsRequest,
        snapshot: SchemaSnapshot,
        table: Table,
        query: QueryParams,
        prefs: Preferences,
        media: str,
        statement: Sql,
        representation: bool,
        status: int,
        *,
        insert: bool,
    ) -> RecordsResponse:
        if representation:
            read_query = replace(
                query,
                conditions={k: v for k, v in query.conditions.items() if k != ()},
                order={k: v for k, v in query.order.items() if k != ()},
                limit={k: v for k, v in query.limit.items() if k != ()},
                offset={k: v for k, v in query.offset.items() if k != ()},
            )
            node = build_read_plan(snapshot, table, read_query)
            statement = read_statement(
                node,
                cte_source(MUTATION_CTE, node.alias),
                count_exact=False,
                limit=None,
                offset=0,
                prefix=statement.add(" "),
            )

        async def answer(cur: Any) -> tuple[RecordsResponse, str]:
            if representation:
                row = await cur.fetchone()
                assert row is not None
                affected, body = int(row["page_total"]), str(row["body"])
            else:
                affected, body = max(cur.rowcount, 0), "[]"
            _check_max_affected(prefs, affected)
            response = _mutation_response(
                request, prefs, media, body, affected, representation, status, insert=insert
            )
            return response, body

        # The answer can still fail (a strict max-affected, a single object that may not be one).
        check_first = (prefs.handling == "strict" and prefs.max_affected is not None) or (
            representation and media == response_shape.OBJECT
        )
        response, body = await self._execute(
            request, statement, answer, read_only=False, check_first=check_first
        )
        if prefs.return_ == "headers-only" and insert and representation:
            location = _location(table, body)
            if location:
                response.headers["Location"] = location
            response.body = ""
        return response

    # -----------------------------------------------------------------------------------------------------
    # functions

    async def _call(
        self, request: RecordsRequest, snapshot: SchemaSnapshot, shape: _Shape
    ) -> RecordsResponse:
        schema, prefs, media = shape.schema, shape.prefs, shape.media
        method = request.method.upper()
        if method not in ("GET", "HEAD", "POST"):
            raise RecordsError(405, "PGRST101", "Only GET and POST verbs are allowed for functions")
        overloads = snapshot.routines.get((schema, request.resource), [])
        names = frozenset(p.name for r in overloads for p in r.parameters if p.name)
        args: dict[str, Any]
        if method == "POST":
            query = _parsed_query(snapshot, request, frozenset())
            try:
                raw_body = orjson.loads(request.body) if request.body.strip() else {}
            except orjson.JSONDecodeError as exc:
                raise RecordsError(400, "PGRST102", "Empty or invalid json", str(exc)) from None
            args = raw_body if isinstance(raw_body, dict) else {}
        else:
            query = _parsed_query(snapshot, request, names)
            args = dict(query.function_args)
            raw_body = args
        # The routine and the statement depend on the shape and on which parameters the arguments name (and
        # whether they name others), never on their values, nor on names no overload has: those are the
        # caller's choice, and the memory must not keep them.
        given = args.keys()
        plan = _memoized(
            snapshot,
            ("rpc", shape.key, frozenset(given & names), not given <= names),
            lambda: _plan_call(
                snapshot,
                request,
                _choose_routine(schema, request.resource, overloads, args),
                query,
                args,
                prefs,
            ),
        )
        routine = plan.routine
        if prefs.handling == "strict" and prefs.max_affected is not None and not routine.returns_set:
            # PostgREST refuses before the call: only a set's rows can be counted against the limit.
            raise RecordsError(
                400,
                "PGRST128",
                "Function must return SETOF or TABLE when max-affected preference is used with "
                "handling=strict",
            )
        if routine.single_unnamed_json:
            args_json = orjson.dumps(raw_body).decode()
        else:
            args_json = orjson.dumps({k: args[k] for k in plan.arg_names}).decode()
        read_only = method != "POST" or routine.volatility != "v"
        if plan.node is not None:  # a set or row of a table type: read like a table, as PostgREST does
            from_args, call = call_source(routine, args_json, plan.arg_names, request.resource)
            return await self._run_read(
                request,
                plan.node,
                function_source(from_args, call, plan.node.alias),  # (what a planned count explains)
                prefs,
                media,
                None,
                read_only=read_only,
                single_value=not routine.returns_set,
                call=(from_args, call),
            )
        statement = _filled(plan.statement.text, plan.statement.params, plan.args_indexes, args_json)

        async def answer(cur: AsyncCursor[DictRow]) -> RecordsResponse:
            row = await cur.fetchone()
            assert row is not None
            if plan.offset is not None:
                return _read_response(
                    request,
                    row,
                    plan.offset,
                    None,
                    prefs,
                    media,
                    single_value=not routine.returns_set,
                    call=True,
                )
            if routine.returns_set:
                _check_max_affected(prefs, row["page_total"])
            if routine.return_kind == "void":
                return _with_response_gucs(row, RecordsResponse(204, "", {}, None))
            body = row["body"] if row["body"] is not None else "null"
            if method == "HEAD":
                body = ""
            content_range = "0-0/*" if not routine.returns_set else "*/*"
            return _with_response_gucs(
                row, RecordsResponse(200, body, {"Content-Range": content_range}, media)
            )

        # A write is answered before COMMIT: a bad response GUC or too many rows must still roll it back.
        return await self._execute(request, statement, answer, read_only=read_only, check_first=not read_only)

    # -----------------------------------------------------------------------------------------------------

    async def _execute(
        self,
        request: RecordsRequest,
        statement: Sql | Callable[[AsyncCursor[DictRow]], Awaitable[Sql]],
        answer: Callable[[AsyncCursor[DictRow]], Awaitable[_T]],
        *,
        read_only: bool,
        check_first: bool,
    ) -> _T:
        """One statement as the caller (`statement` may be rendered in the transaction), then the answer.

        The answer is read after COMMIT (the transaction is then one round trip), unless it can still fail
        and must roll a write back (`check_first`): then a nested pipeline block syncs, and the answer is
        made before COMMIT."""
        async with self._transaction(request, read_only=read_only) as cur:
            if not isinstance(statement, Sql):
                statement = await statement(cur)
            if not check_first:
                await cur.execute(statement.text, statement.params)
            else:
                async with cur.connection.pipeline():
                    await cur.execute(statement.text, statement.params)
                return await answer(cur)
        return await answer(cur)

    def _transaction(
        self, request: RecordsRequest, *, read_only: bool
    ) -> AbstractAsyncContextManager[AsyncCursor[DictRow]]:
        return self.database.as_caller(request.principal, read_only=read_only)


def _translate(exc: psycopg.Error, anonymous: bool) -> RecordsError:
    if exc.diag.sqlstate is None and isinstance(exc, psycopg.DataError | psycopg.ProgrammingError):
        return RecordsError(400, "22023", str(exc).splitlines()[0] if str(exc) else "invalid value")
    return from_database_error(exc, is_anonymous=anonymous)


#: Stands for the body (or a call's arguments) in a cached statement's parameters (found by identity).
_BODY = "\x00pgrst-body\x00"


def _memoized(snapshot: SchemaSnapshot, key: Any, make: Callable[[], _T]) -> _T:
    """`make()`, once per `key` and schema snapshot (a reload starts a new one); emptied when full. An
    exception from `make` is not remembered."""
    found: _T | None = snapshot.read_plans.get(key)
    if found is None:
        found = make()
        if len(snapshot.read_plans) >= READ_PLAN_CACHE_SIZE:
            snapshot.read_plans.clear()
        snapshot.read_plans[key] = found
    return found


def _parsed(snapshot: SchemaSnapshot, schema: str, request: RecordsRequest) -> tuple[Table, QueryParams]:
    """The table and the parsed query string, once per URL and snapshot (nothing mutates a parsed query)."""
    return _memoized(
        snapshot,
        ("parsed", schema, request.resource, request.query_string),
        lambda: (find_table(snapshot, schema, request.resource), parse_query(request.query)),
    )


def _cached_statement(snapshot: SchemaSnapshot, key: Any, body: str, render: Callable[[str], Sql]) -> Sql:
    """A write statement whose text depends only on `key` (URL, columns, preferences): rendered once per
    snapshot with a stand-in for the body, which is the only parameter that changes between requests."""

    def template() -> tuple[str, tuple[Any, ...], tuple[int, ...]]:
        rendered = render(_BODY)
        return rendered.text, tuple(rendered.params), _body_indexes(rendered)

    return _filled(*_memoized(snapshot, key, template), body)


@dataclass(frozen=True)
class _Shape:
    """What a request's shape (`key`: all of it but the body and the caller) decides, once per snapshot."""

    key: tuple[Any, ...]
    schema: str
    prefs: Preferences
    media: str


@dataclass(frozen=True)
class _CallPlan:
    """How to call a routine for one request shape and set of argument names. The arguments travel as one
    JSON parameter, at `args_indexes` of `statement`. A table-typed result is read
    like a table: with `offset`, the statement is final; with `node`, counts need planning per request."""

    routine: Routine
    arg_names: list[str]
    statement: Sql
    args_indexes: tuple[int, ...] = ()
    offset: int | None = None
    node: ReadNode | None = None


def _plan_call(
    snapshot: SchemaSnapshot,
    request: RecordsRequest,
    routine: Routine,
    query: QueryParams,
    args: Mapping[str, Any],
    prefs: Preferences,
) -> _CallPlan:
    arg_names = [] if routine.single_unnamed_json else [p.name for p in routine.parameters if p.name in args]
    from_args, call = call_source(routine, _BODY, arg_names, request.resource)
    if routine.return_kind == "composite":
        table = snapshot.tables.get(routine.return_table) if routine.return_table else None
        node = build_read_plan(snapshot, table, query, alias=routine.name)
        if prefs.count in ("planned", "estimated"):
            return _CallPlan(routine, arg_names, Sql(), node=node)
        offset, limit = _page(request, node)
        statement = function_read_statement(
            node, from_args, call, count_exact=prefs.count == "exact", limit=limit, offset=offset
        )
        return _CallPlan(routine, arg_names, statement, _body_indexes(statement), offset=offset)
    sql = Sql()
    if routine.return_kind == "void":
        sql.add("SELECT ").extend(call).add(" AS body")
    elif routine.returns_set:
        sql.add(
            "SELECT coalesce(json_agg(\"pgrst_value\".v), '[]')::text AS body, count(*) AS page_total FROM "
        )
        if from_args.parts:
            sql.extend(from_args).add(" CROSS JOIN LATERAL ")
        sql.extend(call).add(' AS "pgrst_value"(v)')
    else:
        sql.add("SELECT to_json(").extend(call).add(")::text AS body")
    if from_args.parts and not (routine.return_kind == "scalar" and routine.returns_set):
        sql.add(" FROM ").extend(from_args)
    sql = with_response_gucs(sql)
    return _CallPlan(routine, arg_names, sql, _body_indexes(sql))


def _body_indexes(statement: Sql) -> tuple[int, ...]:
    """Where the stand-in for the body sits among the parameters (a count renders the source twice)."""
    return tuple(i for i, param in enumerate(statement.params) if param is _BODY)


def _filled(text: str, params: Sequence[Any], indexes: tuple[int, ...], body: str) -> Sql:
    filled = list(params)
    for index in indexes:
        filled[index] = body
    return Sql([text], filled)


def _parsed_query(snapshot: SchemaSnapshot, request: RecordsRequest, names: frozenset[str]) -> QueryParams:
    """A function call's query string, parsed once per URL and snapshot (`names`: its GET arguments)."""
    return _memoized(
        snapshot,
        ("call-query", request.resource, request.query_string, names),
        lambda: parse_query(request.query, names),
    )


def _unparsed_rows(request: RecordsRequest, table: Table, query: QueryParams) -> tuple[list[str], str] | None:
    """The columns and rows of an insert whose JSON body need not be parsed here, else None.

    PostgREST's documented shortcut: with `?columns=` an array body goes to Postgres as it is, and Postgres
    checks it (`@supabase/postgrest-js`, and so `@insforge/sdk`, name the columns of every array insert).
    Anything else takes the parsed path: a body that is not an array (it would have to be wrapped in one,
    which could turn `{..},{..}` into valid JSON), that is not UTF-8, or that holds `""` somewhere (InsForge's
    quirk needs the rows)."""
    content_type = request.content_type
    body = request.body.strip()
    if (
        query.columns is None
        or not (content_type in ("application/json", "") or content_type.endswith("+json"))
        or not body.startswith(b"[")
        or b'""' in body
    ):
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    columns = list(query.columns)
    _check_columns(table, columns)
    return columns, text


def _check_columns(table: Table, columns: Sequence[str]) -> None:
    for name in columns:
        if name not in table.columns:
            raise RecordsError(
                400, "PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache"
            )


def _schema_of(request: RecordsRequest, snapshot: SchemaSnapshot, writing: bool) -> str:
    schema = None
    for key, value in request.query:
        if key == "schema":
            schema = value
    if schema is None:
        header = (
            "content-profile"
            if writing or (request.is_rpc and request.method.upper() == "POST")
            else "accept-profile"
        )
        schema = request.headers.get(header)
    schema = schema or "public"
    if schema not in snapshot.schemas:
        raise RecordsError(
            406,
            "PGRST106",
            f"Invalid schema: {schema}",
            None,
            "Only the following schemas are exposed: " + ", ".join(snapshot.schemas),
        )
    return schema


def _page(request: RecordsRequest, node: ReadNode) -> tuple[int, int | None]:
    """Offset and limit from `limit`/`offset` and the `Range` header (their intersection)."""
    offset, limit = node.offset, node.limit
    header = request.headers.get("range")
    if header and request.method.upper() in ("GET", "HEAD"):
        first, last = parse_range_header(header)
        upper_query = None if limit is None else offset + limit - 1
        lower = max(first, offset)
        upper = last if upper_query is None else (upper_query if last is None else min(last, upper_query))
        offset = lower
        limit = None if upper is None else max(upper - lower + 1, 0)
    return offset, limit


async def _planned_rows(cur: Any, node: ReadNode, source: Source, prefix: Sql | None) -> int | None:
    if prefix is not None:
        return None
    statement = explain_statement(node, source)
    await cur.execute(statement.text, statement.params)
    row = await cur.fetchone()
    if row is None:
        return None
    plan = next(iter(row.values()))
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    try:
        return int(plan[0]["Plan"]["Plan Rows"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _read_response(
    request: RecordsRequest,
    row: Mapping[str, Any],
    offset: int,
    planned: int | None,
    prefs: Preferences,
    media: str,
    *,
    single_value: bool,
    call: bool = False,
) -> RecordsResponse:
    """Status, Content-Range and body of a read, from the statement's (total, page_total, body) row; for a
    function `call`, with its max-affected check and response GUCs."""
    total: int | None = row["total"] if row["total"] is not None else planned
    page_total: int = row["page_total"]
    if call:
        _check_max_affected(prefs, page_total)
    body: str = row["body"]
    lower, upper = offset, offset + page_total - 1
    status = response_shape.range_status(lower, upper, total)
    headers = {"Content-Range": response_shape.content_range(lower, upper, total)}
    applied = prefs.applied(mutation=False)
    if applied:
        headers["Preference-Applied"] = applied
    if status == 416:
        headers["Content-Range"] = response_shape.content_range(1, 0, total)
        raise _range_error(total, headers)
    if single_value:
        body = response_shape.singular(body, page_total) if page_total == 1 else "null"
    else:
        body = response_shape.shaped(body, media, page_total)
    if request.method.upper() == "HEAD":
        body = ""
    response = RecordsResponse(status, body, headers, media)
    return _with_response_gucs(row, response) if call else response


def _with_response_gucs(row: Mapping[str, Any], response: RecordsResponse) -> RecordsResponse:
    """The status and headers a function asked for with `response.status` / `response.headers`, checked as
    PostgREST checks them (500 PGRST112 / PGRST111, never a guess)."""
    status: str | None = row["response_status"]
    if status is not None:
        if not (status.isascii() and status.isdigit() and 100 <= int(status) <= 599):
            raise RecordsError(500, "PGRST112", "response.status guc must be a valid status code")
        response.status = int(status)
    headers: str | None = row["response_headers"]
    if headers is not None:
        try:
            items = orjson.loads(headers)
        except orjson.JSONDecodeError:
            items = None
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and len(item) == 1 and valid_header(*next(iter(item.items())))
            for item in items
        ):
            raise RecordsError(
                500,
                "PGRST111",
                "response.headers guc must be a JSON array composed of objects with a single key and a "
                "string value",
            )
        for item in items:
            response.headers.update(item)
    return response


def _range_error(total: int | None, headers: dict[str, str]) -> RecordsError:
    error = RecordsError(
        416,
        "PGRST103",
        "Requested range not satisfiable",
        f"An offset of the requested range is greater than the total of {total} rows",
    )
    error.headers = headers
    return error


def _wants_rows(prefs: Preferences, media: str) -> bool:
    return prefs.return_ in ("representation", "headers-only") or (
        media == response_shape.OBJECT and prefs.return_ != "minimal"
    )


def _root_conditions(table: Table, query: QueryParams) -> list[Any]:
    """The root filters of a write, checked against the table's columns (no embeds on writes, so an
    empty snapshot: nothing here may resolve a relationship)."""
    node = build_read_plan(
        SchemaSnapshot(), table, replace(query, select=(), conditions={(): query.conditions.get((), [])})
    )
    if node.exists:
        raise RecordsError(400, "PGRST100", "Filters on embedded resources are not allowed on writes")
    return node.conditions


def _check_max_affected(prefs: Preferences, affected: int) -> None:
    if prefs.handling == "strict" and prefs.max_affected is not None and affected > prefs.max_affected:
        raise RecordsError(
            400,
            "PGRST124",
            "Query result exceeds max-affected preference constraint",
            f"The query affects {affected} rows",
        )


def _mutation_response(
    request: RecordsRequest,
    prefs: Preferences,
    media: str,
    body: str,
    affected: int,
    representation: bool,
    status: int,
    *,
    insert: bool,
) -> RecordsResponse:
    total = affected if prefs.count == "exact" else None
    headers = {
        "Content-Range": response_shape.content_range(1, 0, total)
        if insert
        else response_shape.content_range(0, affected - 1, total)
    }
    applied = prefs.applied(mutation=True, upsert_allowed=insert)
    if applied:
        headers["Preference-Applied"] = applied
    if representation:
        body = response_shape.shaped(body, media, affected)
    if representation and prefs.return_ != "headers-only":
        return RecordsResponse(status, body, headers, media)
    if insert:
        # InsForge answers a blank body with `[]`.
        return RecordsResponse(201 if status == 201 else 204, "[]" if status == 201 else "", headers, media)
    return RecordsResponse(204, "", headers, None)


def _location(table: Table, body: str) -> str | None:
    rows = orjson.loads(body or "[]")
    if not rows or not table.primary_key:
        return None
    first = rows[0]
    parts = [f"{quote(name)}=eq.{quote(_plain(first.get(name)))}" for name in table.primary_key]
    return f"/{quote(table.name)}?" + "&".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _choose_routine(schema: str, name: str, overloads: Sequence[Routine], args: Mapping[str, Any]) -> Routine:
    given = set(args)
    fits: list[Routine] = []
    for routine in overloads:
        if routine.single_unnamed_json:
            fits.append(routine)
            continue
        names = {p.name for p in routine.parameters}
        required = {p.name for p in routine.parameters if not p.has_default}
        if required <= given <= names and all(p.name for p in routine.parameters):
            fits.append(routine)
    if len(fits) > 1:
        named = [r for r in fits if not r.single_unnamed_json]
        if len(named) == 1:
            return named[0]
        raise RecordsError(
            300,
            "PGRST203",
            "Could not choose the best candidate function between: "
            + ", ".join(
                f"{r.schema}.{r.name}({', '.join(p.name + ' => ' + p.type for p in r.parameters)})"
                for r in fits
            ),
            None,
            "Try renaming the parameters or the function itself in the database so function overloading "
            "can be resolved",
        )
    if not fits:
        signature = ", ".join(sorted(given))
        raise RecordsError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({signature}) in the schema cache",
            f"Searched for the function {schema}.{name} with parameters {signature or 'none'}, "
            "but no matches "
            "were found in the schema cache.",
        )
    return fits[0]
