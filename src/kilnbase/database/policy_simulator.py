"""The RLS policy simulator (InsForge's `POST /api/database/policies/simulate`): run one data operation as a
request role with the JWT claims given, in a transaction that is always rolled back, and report what Row
Level Security did with it.

Postgres is the oracle: nothing here re-implements how policies combine. The operation runs for real, as
`Database.transaction_as` runs a caller's SQL (the request pool's authenticator, `role` and
`request.jwt.claims` set transaction-locally, values bound, identifiers quoted), under a statement timeout
of its own, and ends in ROLLBACK whatever happens; then the outcome is compared with a baseline, the rows the
same WHERE matches with RLS out of the way. The baseline is counted as `project_admin` (never as the owner:
the WHERE may run the app's own operators) with `row_security` off, in a read-only transaction: Postgres then
refuses (42501) rather than filters when RLS would still apply to it, and the baseline is reported as
unknown (`rowsTotal: null`) instead of wrong. Catalog facts (the table's kind and RLS flags, the role's
BYPASSRLS and ownership, `pg_policies`) are read as the owner, which runs no app code.

Decisions, as InsForge classifies them:

- `bypass`: RLS is on but does not apply to the role: it has BYPASSRLS, or it owns the table and the table
  does not FORCE ROW LEVEL SECURITY. In InsForge, `project_admin` has BYPASSRLS. In Kilnbase it has not
  (migration 0041): it owns the tables the API and its SQL create, which bypasses RLS the same way, and
  reaches the others through the `project_admin_policy` Kilnbase adds to every table in `public` with RLS on.
  So `bypass` is read from the catalog (`bypassReason`: `owner` or `bypassrls`), never assumed from the
  role's name, and `project_admin` on a table it does not own, or one that forces RLS, is evaluated like
  any role.
- `denied`: the statement failed with 42501 (no privilege, a WITH CHECK), or rows match and none pass; or
  nothing matches while RLS is on and no permissive policy applies to the role (default deny).
- `partial`: some of the matching rows pass.
- `allowed`: all of them do (or nothing matches, and a permissive policy could let rows through).

Not undone by the rollback, as in any Postgres transaction: sequence values an INSERT's defaults draw, and
whatever a trigger or a policy's function does outside the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilnbase.database.database_errors import DatabaseFailure, api_error_from
from kilnbase.db.schema_cache import HIDDEN_SCHEMAS
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse

Operation = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]
Role = Literal["anon", "authenticated", "project_admin"]
Decision = Literal["bypass", "denied", "partial", "allowed"]

#: InsForge's budget for each statement of a simulation.
STATEMENT_TIMEOUT = "5s"
DEFAULT_SAMPLE_LIMIT = 5
#: Kilnbase's bounds on a request (InsForge caps `sampleLimit` too).
MAX_SAMPLE_LIMIT = 100
MAX_COLUMNS = 100
MAX_CLAIMS_BYTES = 8192

_INSUFFICIENT_PRIVILEGE = "42501"
_QUERY_CANCELED = "57014"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _name(value: str, what: str) -> str:
    """A schema, table or column name: quoted wherever it is used (`sql.Identifier`), so only what
    Postgres cannot name is refused: control characters, and more than 63 bytes."""
    if _CONTROL.search(value) or len(value.encode()) > 63:
        raise ValueError(f"not a valid {what} name (at most 63 bytes, no control characters)")
    return value


class SimulationRequest(BaseModel):
    """The body InsForge's simulator takes; `row` is INSERT's values or UPDATE's SET, `match` the WHERE
    (column = value, null as IS NULL) of SELECT, UPDATE and DELETE."""

    model_config = ConfigDict(strict=True, frozen=True, populate_by_name=True)

    schema_name: str = Field("public", alias="schema", min_length=1)
    table: str = Field(min_length=1)
    operation: Operation
    role: Role
    claims: dict[str, Any] | None = None
    row: dict[str, Any] | None = Field(None, max_length=MAX_COLUMNS)
    match: dict[str, Any] | None = Field(None, max_length=MAX_COLUMNS)
    sample_limit: int = Field(DEFAULT_SAMPLE_LIMIT, alias="sampleLimit", ge=0, le=MAX_SAMPLE_LIMIT)

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        return _name(value, "schema")

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return _name(value, "table")

    @field_validator("row", "match")
    @classmethod
    def _columns(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for column in value or {}:
            _name(column, "column")
        return value

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(orjson.dumps(value)) > MAX_CLAIMS_BYTES:
            raise ValueError(f"at most {MAX_CLAIMS_BYTES} bytes of JSON")
        return value

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> SimulationRequest:
        """`body` checked, or InsForge's 400 `INVALID_INPUT` listing every field that is wrong."""
        return parse(cls, dict(body))

    @property
    def effective_claims(self) -> dict[str, Any]:
        """The claims as the statement sees them: the simulated role always wins over a `role` claim, so
        `auth.role()` cannot disagree with the role the statement runs as."""
        return {**(self.claims or {}), "role": self.role}


@dataclass(frozen=True)
class _Identity:
    """The simulated caller, as `Database.transaction_as` takes one."""

    db_role: str
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class _TableFacts:
    rls_enabled: bool
    bypass_reason: Literal["owner", "bypassrls"] | None


_TABLE = """
select c.relkind::text as kind, c.relrowsecurity as rls, c.relforcerowsecurity as forced,
  r.rolbypassrls as bypassrls, pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE') as owner
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
cross join pg_catalog.pg_roles r
where n.nspname = %s and c.relname = %s and r.rolname = %s
"""

# A policy applies when its command is ALL or the operation's, and it names PUBLIC or a role whose
# privileges the simulated role has (as Postgres decides it: membership with inheritance).
_POLICIES = """
select tablename as "tableName", policyname as "policyName", cmd, roles, qual, with_check as "withCheck",
  permissive = 'PERMISSIVE' as permissive
from pg_catalog.pg_policies
where schemaname = %s and tablename = %s and (cmd = 'ALL' or cmd = %s)
  and exists (select 1 from unnest(roles) as r(name)
              where r.name = 'public' or pg_catalog.pg_has_role(%s, r.name, 'USAGE'))
order by permissive desc, policyname
"""


class _Values:
    """Each value of the request as a bound parameter (to run) or as a literal (the example query), so the
    statement that runs and the one shown are built by the same code."""

    def __init__(self, *, literal: bool) -> None:
        self.literal = literal
        self.params: list[Any] = []

    def __call__(self, value: Any) -> sql.Composable:
        # An object or array goes as its JSON text, typed by its column (json, jsonb); a string goes untyped
        # (psycopg's default), so Postgres reads it as the column's type (uuid, date, ...).
        bindable = orjson.dumps(value).decode() if isinstance(value, dict | list) else value
        if self.literal:
            return sql.Literal(bindable)
        self.params.append(bindable)
        return sql.Placeholder()


def _where(match: Mapping[str, Any] | None, values: _Values) -> sql.Composable:
    if not match:
        return sql.SQL("")
    tests = [
        sql.SQL("{} is null").format(sql.Identifier(column))
        if value is None
        else sql.SQL("{} = {}").format(sql.Identifier(column), values(value))
        for column, value in match.items()
    ]
    return sql.SQL(" where ") + sql.SQL(" and ").join(tests)


def _operation(request: SimulationRequest, table: sql.Composable, values: _Values) -> sql.Composed:
    """The data operation itself (the SELECT as the example shows it: what runs adds the count)."""
    if request.operation == "SELECT":
        if request.sample_limit == 0:
            return sql.SQL("select count(*) from {}{}").format(table, _where(request.match, values))
        return sql.SQL("select * from {}{} limit {}").format(
            table, _where(request.match, values), sql.Literal(request.sample_limit)
        )
    if request.operation == "INSERT":
        if not request.row:
            return sql.SQL("insert into {} default values").format(table)
        columns = sql.SQL(", ").join(sql.Identifier(column) for column in request.row)
        row = sql.SQL(", ").join(values(value) for value in request.row.values())
        return sql.SQL("insert into {} ({}) values ({})").format(table, columns, row)
    if request.operation == "UPDATE":
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), values(value))
            for column, value in (request.row or {}).items()
        )
        return sql.SQL("update {} set {}{}").format(table, assignments, _where(request.match, values))
    return sql.SQL("delete from {}{}").format(table, _where(request.match, values))


def _visible(request: SimulationRequest, table: sql.Composable, values: _Values) -> sql.Composed:
    """What the SELECT runs: the rows the role sees, and up to `sampleLimit` of them (json keeps the
    columns' order)."""
    count = sql.SQL("select count(*) from {}{}").format(table, _where(request.match, values))
    if request.sample_limit == 0:
        return sql.SQL("select ({}) as visible, null::json as sample").format(count)
    return sql.SQL(
        "select ({}) as visible, (select coalesce(json_agg(s), '[]'::json) from ({}) as s) as sample"
    ).format(count, _operation(request, table, values))


def classify(
    affected: int, total: int | None, *, bypass: bool, rls_enabled: bool, permissive_policies: int
) -> Decision:
    """The decision from what Postgres did (`affected`: rows seen or changed) and the baseline (`total`:
    the rows the WHERE matches without RLS; None when it could not be counted)."""
    if bypass:
        return "bypass"
    if total is None:
        return "allowed" if affected > 0 else "denied"
    if total == 0:
        # Nothing to act on, so RLS was not observed: denied only when no permissive policy could pass a row.
        return "denied" if rls_enabled and permissive_policies == 0 else "allowed"
    if affected == 0:
        return "denied"
    return "partial" if affected < total else "allowed"


@dataclass
class _Outcome:
    decision: Decision
    rows_visible: int | None = None
    rows_total: int | None = None
    rows_affected: int | None = None
    sample_rows: list[dict[str, Any]] | None = None
    denial_reason: str | None = None


def _denial_kind(reason: str | None) -> str | None:
    """A 42501 is either an RLS policy's refusal or a missing GRANT: Postgres's (English) message tells."""
    if reason is None:
        return None
    return "rls" if re.search(r"row.?level security", reason, re.IGNORECASE) else "grant"


def _explanation(
    request: SimulationRequest, facts: _TableFacts, outcome: _Outcome, policies: list[dict[str, Any]]
) -> str:
    what = f'{request.operation} as "{request.role}" on {request.schema_name}.{request.table}'
    reason = outcome.denial_reason
    if facts.bypass_reason is not None:
        if outcome.decision == "denied":
            return (
                f"{what} was denied: {reason}. Row level security does not apply to this role here, so this "
                "is a missing table privilege (GRANT), not a policy."
            )
        why = (
            f'role "{request.role}" owns the table, which does not FORCE ROW LEVEL SECURITY'
            if facts.bypass_reason == "owner"
            else f'role "{request.role}" has BYPASSRLS'
        )
        return (
            f"{what}: {why}, so Postgres evaluates no policy for it; table privileges (GRANTs) still apply."
        )
    if not facts.rls_enabled:
        return (
            f"Row level security is not enabled on {request.table}, so no policy is enforced: {what} is "
            f"governed by table privileges (GRANTs) alone. Decision: {outcome.decision}."
        )
    permissive = sum(1 for policy in policies if policy["permissive"])
    summary = (
        f'No RLS policy applies to {request.operation} for role "{request.role}", so it is denied by default.'
        if not policies
        else f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'} apply ({permissive} permissive); "
        "permissive policies combine with OR, restrictive ones with AND."
    )
    if outcome.decision == "denied" and _denial_kind(reason) == "grant":
        return f"{what} is denied: {reason}. This is a missing table privilege (GRANT), not an RLS policy."
    if outcome.decision == "denied" and reason is not None:
        return f"{what} is denied: {reason}. {summary}"
    if outcome.rows_total == 0:
        observed = (
            "no applicable permissive policy lets a row through, so it is denied by default."
            if outcome.decision == "denied"
            else "the policies' effect could not be observed."
        )
        return f"{what} matched no rows, so {observed} {summary}"
    if outcome.decision == "denied":
        if outcome.rows_total is None:
            return (
                f'{what} returned no rows for "{request.role}", and the baseline without RLS could not be '
                f"counted, so this may be an empty match rather than an RLS denial. {summary}"
            )
        return f"{what} is denied by RLS: none of the {outcome.rows_total} matching rows pass. {summary}"
    if outcome.decision == "partial":
        passed = outcome.rows_visible if outcome.rows_visible is not None else outcome.rows_affected
        return (
            f"{what} is partially allowed: {passed} of {outcome.rows_total} matching rows pass RLS. {summary}"
        )
    return f"{what} is allowed. {summary}"


def _example_query(request: SimulationRequest, table: sql.Composable) -> str:
    """The simulation as SQL to paste into psql (as a superuser or a member of the role), rolled back."""
    claims = orjson.dumps(request.effective_claims).decode()
    lines = [
        "BEGIN;",
        sql.SQL("SET LOCAL ROLE {};").format(sql.Identifier(request.role)).as_string(),
        sql.SQL("SELECT set_config('request.jwt.claims', {}, true);").format(sql.Literal(claims)).as_string(),
        _operation(request, table, _Values(literal=True)).as_string() + ";",
        "ROLLBACK;",
    ]
    return "\n".join(lines)


class PolicySimulator:
    def __init__(self, database: Database, *, statement_timeout: str = STATEMENT_TIMEOUT) -> None:
        self.database = database
        self.statement_timeout = statement_timeout

    async def simulate(self, request: SimulationRequest, *, sample_rows: bool = True) -> dict[str, Any]:
        """Run `request`, roll it back, and report InsForge's result; `sample_rows` False leaves the rows
        out (`sampleRowsWithheld`), for callers that may not read the table's rows."""
        _refuse_closed_schema(request.schema_name)
        table = sql.Identifier(request.schema_name, request.table)
        facts, policies = await self._catalog(request)
        try:
            outcome = await self._run(request, table, facts, policies)
        except psycopg.Error as exc:
            raise _simulation_error(exc, self.statement_timeout) from None
        withheld = outcome.sample_rows is not None and not sample_rows
        return {
            "schema": request.schema_name,
            "table": request.table,
            "operation": request.operation,
            "role": request.role,
            "effectiveClaims": request.effective_claims,
            "rlsEnabled": facts.rls_enabled,
            "bypassRls": facts.bypass_reason is not None,
            "bypassReason": facts.bypass_reason,
            "decision": outcome.decision,
            "rowsVisible": outcome.rows_visible,
            "rowsTotal": outcome.rows_total,
            "rowsAffected": outcome.rows_affected,
            "sampleRows": None if withheld else outcome.sample_rows,
            "sampleRowsWithheld": withheld,
            "denialReason": outcome.denial_reason,
            "applicablePolicies": policies,
            "explanation": _explanation(request, facts, outcome, policies),
            "exampleQuery": _example_query(request, table),
        }

    async def _catalog(self, request: SimulationRequest) -> tuple[_TableFacts, list[dict[str, Any]]]:
        async with self.database.as_owner() as cur:
            await cur.execute(_TABLE, (request.schema_name, request.table, request.role))
            found = await cur.fetchone()
            if found is None:
                raise ApiError(
                    404,
                    "DATABASE_NOT_FOUND",
                    f'Table "{request.schema_name}.{request.table}" does not exist.',
                    "Check the table's name and schema; list the tables with GET /api/database/tables.",
                )
            if found["kind"] not in ("r", "p"):
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    f'"{request.schema_name}.{request.table}" is not a base table, so it has no row level '
                    "security policies to simulate.",
                    "Simulate against a base table. Views, materialized views, and foreign tables are not "
                    "supported.",
                )
            await cur.execute(
                _POLICIES, (request.schema_name, request.table, request.operation, request.role)
            )
            policies = [dict(row) for row in await cur.fetchall()]
        bypass: Literal["owner", "bypassrls"] | None = None
        if found["rls"] and found["bypassrls"]:
            bypass = "bypassrls"
        elif found["rls"] and found["owner"] and not found["forced"]:
            bypass = "owner"
        return _TableFacts(rls_enabled=found["rls"], bypass_reason=bypass), policies

    async def _run(
        self,
        request: SimulationRequest,
        table: sql.Composable,
        facts: _TableFacts,
        policies: list[dict[str, Any]],
    ) -> _Outcome:
        if request.operation == "UPDATE" and not request.row:
            raise ApiError(
                400,
                "INVALID_INPUT",
                'UPDATE simulation requires a "row" payload (the SET values).',
                "Provide a row object mapping columns to the values you want to write.",
            )
        values = _Values(literal=False)
        statement = (
            _visible(request, table, values)
            if request.operation == "SELECT"
            else _operation(request, table, values)
        )
        affected, sample, denial = 0, None, None
        identity = _Identity(request.role, request.effective_claims)
        try:
            async with self.database.transaction_as(
                identity,
                read_only=request.operation == "SELECT",
                statement_timeout=self.statement_timeout,
                force_rollback=True,
            ) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(statement, values.params)
                if request.operation == "SELECT":
                    seen = await cur.fetchone()
                    affected, sample = (seen["visible"], seen["sample"]) if seen else (0, None)
                else:
                    affected = max(cur.rowcount, 0)
        except psycopg.Error as exc:
            if exc.sqlstate != _INSUFFICIENT_PRIVILEGE:
                raise
            denial = exc.diag.message_primary or str(exc)
        total = None if request.operation == "INSERT" else await self._baseline(request, table)
        permissive = sum(1 for policy in policies if policy["permissive"])
        if denial is not None:
            decision: Decision = "denied"
        elif request.operation == "INSERT":
            decision = "bypass" if facts.bypass_reason else "allowed"
        else:
            decision = classify(
                affected,
                total,
                bypass=facts.bypass_reason is not None,
                rls_enabled=facts.rls_enabled,
                permissive_policies=permissive,
            )
        if request.operation == "SELECT":
            return _Outcome(
                decision, rows_visible=affected, rows_total=total, sample_rows=sample, denial_reason=denial
            )
        return _Outcome(decision, rows_total=total, rows_affected=affected, denial_reason=denial)

    async def _baseline(self, request: SimulationRequest, table: sql.Composable) -> int | None:
        """The rows the WHERE matches with RLS out of the way, or None when Postgres will not count them so
        (`project_admin` lacks the privilege, or RLS would still apply to it: `row_security` off makes that
        an error rather than a filtered count). Counted as `project_admin`, never as the owner: the WHERE
        compares the app's columns with the app's operators, and a column of a type the app defined may
        run the app's code (its `=` operator, a domain's CHECK on the bound value), which must not run with
        the owner's rights."""
        values = _Values(literal=False)
        count = sql.SQL("select count(*) as n from {}{}").format(table, _where(request.match, values))
        admin = _Identity("project_admin", {"role": "project_admin"})
        async with self.database.transaction_as(
            admin, read_only=True, statement_timeout=self.statement_timeout, force_rollback=True
        ) as conn:
            await conn.execute("select set_config('row_security', 'off', true)")
            try:
                async with conn.transaction():  # a savepoint: a refusal leaves the transaction usable
                    cur = await conn.execute(count, values.params)
                    found = await cur.fetchone()
            except psycopg.Error as exc:
                if exc.sqlstate != _INSUFFICIENT_PRIVILEGE:
                    raise
                return None
        return int(found[0]) if found else None


def _refuse_closed_schema(schema: str) -> None:
    if schema in HIDDEN_SCHEMAS or schema.startswith("pg_"):  # (Kilnbase's own, and Postgres's)
        raise ApiError(
            403,
            "FORBIDDEN",
            f'Schema "{schema}" belongs to Kilnbase or to Postgres; the policy simulator reaches only the '
            "app's own schemas.",
            "Simulate against a table of the app's schemas (public, or one the app created).",
        )


def _simulation_error(exc: psycopg.Error, timeout: str) -> ApiError:
    """A failure other than a denial: a timeout is InsForge's 503; anything else is the database's message
    in the admin API's shape (a bad column or value is a 400, never a 500)."""
    if exc.sqlstate == _QUERY_CANCELED:
        return DatabaseFailure(
            503,
            "DATABASE_INTERNAL_ERROR",
            "Policy simulation timed out before it could complete.",
            f"The policy or query was too expensive to evaluate within the simulation budget "
            f'({timeout} a statement). Narrow it with a "match" filter, or simplify the policy '
            "predicate, and retry.",
        )
    return api_error_from(exc)
