"""A request's body as the statement takes it (PostgREST's `ApiRequest/Payload`): the columns a write sets
and its rows as one JSON text, or a call's arguments. Applies InsForge's `""` quirk.

The JSON body is passed on as received when nothing had to be dropped from it (the common case), so a
bulk insert is not serialized twice, and with `?columns=` an array body is not parsed here at all.
"""

from __future__ import annotations

import csv
import gc
import io
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import orjson

from kilnbase.db.schema_cache import Table
from kilnbase.records.api_request import ApiRequest
from kilnbase.records.call_plan import BodyKind, CallTarget, body_kind
from kilnbase.records.errors import RecordsError
from kilnbase.records.query_grammar import QueryParams
from kilnbase.records.read_plan import TableTarget

#: Whether a body holds `""` somewhere (InsForge's quirk may then apply). The regular expression engine finds
#: it three times faster than `in` does: a JSON body is full of `"`, each a false start for `bytes.find`
#: (8 µs against 24 µs over a 1,000-row insert).
_has_empty_string = re.compile(rb'""').search


class Payload(NamedTuple):
    """The columns a write sets, and its body as the statement's one JSON parameter (an array of rows;
    for an update, the one object). `row`: that one row, when the body must be a single object.

    A named tuple, as `CallArguments`: one is made per request, and a frozen dataclass costs three times as
    much to make (each field is set through `object.__setattr__`)."""

    columns: tuple[str, ...]
    json: str
    row: dict[str, Any] | None = None
    #: The body went to Postgres as it came (`?columns=` and an array): nothing here checked its shape.
    unparsed: bool = False


def insert_payload(api: ApiRequest, target: TableTarget) -> Payload:
    """POST's rows: one object or an array of them, or CSV, or a form.

    Only the columns and the JSON text are kept, not the parsed rows: they must not outlive the parse, let
    alone wait for the database (a bulk insert's thousands of young objects would be walked by every
    garbage collection meanwhile)."""
    unparsed = _unparsed_rows(api, target)
    if unparsed is not None:
        return unparsed
    # No collection while the rows live: they are garbage before this returns, but a thousand young
    # dicts would otherwise set off collections that promote them and then walk them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _rows, columns, rows_json = _decode(api, target.table, target.query, allow_array=True)
        del _rows
    finally:
        if collecting:
            gc.enable()
    return Payload(columns, rows_json)


def single_row_payload(api: ApiRequest, target: TableTarget, *, as_array: bool) -> Payload:
    """The one object of a PATCH (`json`: that object) or a PUT (`as_array`: an array of it, as an insert
    takes it)."""
    rows, columns, rows_json = _decode(api, target.table, target.query, allow_array=False)
    row = rows[0] if rows else {}
    return Payload(columns, rows_json if as_array else orjson.dumps(row).decode(), row)


class CallArguments(NamedTuple):
    """A call's arguments by name (`named`, and `by_name`: a JSON object holding them, for the statement,
    which reads only the parameters it passes), the body as a single unnamed parameter takes it (`whole`:
    JSON text, text, or bytes), and the kind of body that decides which overload may take it."""

    named: dict[str, Any]
    by_name: str
    whole: str | bytes
    kind: BodyKind


def call_arguments(api: ApiRequest, target: CallTarget) -> CallArguments:
    """POST: the JSON body (an object names arguments; anything else names none), a form, CSV (its first
    row), or a raw body (text/plain, text/xml, application/octet-stream: only ever a single unnamed
    parameter's value). GET: the query's arguments.

    A JSON object body is passed on as received (not serialized again): the statement reads only the
    parameters the call passes from it."""
    shape = api.shape
    kind = body_kind(shape.method, api.content_type)
    body = api.body
    if kind is None:
        args = dict(target.query.function_args)
        text = orjson.dumps(args).decode()
        return CallArguments(args, text, text, kind)
    if kind == "bytea":
        return CallArguments({}, "{}", body, kind)
    text = body.decode("utf-8", errors="replace")
    if kind in ("text", "xml"):
        return CallArguments({}, "{}", text, kind)
    if kind in ("form", "csv"):
        if kind == "form":
            args = dict(parse_qsl(text, keep_blank_values=True))
        else:
            args = dict(next(iter(csv_rows(text)), {}))
        text = orjson.dumps(args).decode()
        return CallArguments(args, text, text, kind)
    if api.content_type not in ("application/json", "") and not api.content_type.endswith("+json"):
        raise RecordsError(415, "PGRST102", f"Content-Type not acceptable: {api.content_type}")
    if not body.strip():
        return CallArguments({}, "{}", "{}", kind)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RecordsError(400, "PGRST102", "Empty or invalid json", str(exc)) from None
    if isinstance(parsed, dict):
        return CallArguments(parsed, text, text, kind)
    return CallArguments({}, "{}", text, kind)


def _decode(
    api: ApiRequest, table: Table, query: QueryParams, *, allow_array: bool
) -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    """Rows, the columns they set, and the rows as one JSON array."""
    content_type = api.content_type
    body = api.body
    rows: Any
    if content_type == "text/csv":
        rows = csv_rows(body.decode("utf-8", errors="replace"))
        is_array = True
    elif content_type in (
        "application/json",
        "",
        "application/x-www-form-urlencoded",
    ) or content_type.endswith("+json"):
        if content_type == "application/x-www-form-urlencoded":
            rows = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        else:
            try:
                rows = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError as exc:
                raise _invalid_json(exc) from None
        # orjson gives plain dicts and lists: one object (the usual write) needs no check, and an array's
        # items are checked in C, not one by one.
        is_array = rows.__class__ is list
        if rows.__class__ is dict:
            rows = [rows]
        elif not is_array or not set(map(type, rows)) <= {dict}:
            raise _not_objects()
    else:
        raise RecordsError(415, "PGRST102", f"Content-Type not acceptable: {content_type}")
    if is_array and not allow_array:
        raise RecordsError(400, "PGRST102", "Invalid body", "The body must be a single JSON object")
    untouched = content_type not in ("text/csv", "application/x-www-form-urlencoded")
    if not untouched or _has_empty_string(body):
        for row in rows:
            for key in [k for k, v in row.items() if v == ""]:
                column = table.columns.get(key)
                if column is not None and not column.is_text:
                    del row[key]
                    untouched = False
    if query.columns is not None:
        columns = query.columns
    else:
        # Every key of every row, first seen first. Usually all rows have the first row's keys, which a
        # set union (in C) confirms faster than walking every key in order.
        first = tuple(rows[0]) if rows else ()
        if len(rows) < 2 or set().union(*rows) == set(first):
            columns = first
        else:
            columns = tuple(dict.fromkeys(chain.from_iterable(rows)))
    check_columns(table, columns)
    if untouched and body.strip():
        text = body.decode()
        rows_json = text if is_array else f"[{text}]"
    else:
        rows_json = orjson.dumps(rows).decode()
    return rows, columns, rows_json


def csv_rows(text: str) -> list[dict[str, Any]]:
    """A CSV body's rows, each keyed by the header line (PostgREST's `csvToJson`), a field `NULL` as null;
    blank lines are skipped.

    A line with more or fewer fields than the header is refused (PGRST102, PostgREST's message): Python's
    reader would key the extra fields by None (which no JSON object can hold: a 500) and fill the missing
    ones with None (a null the client never sent). PostgREST refuses the short line and drops the extra
    fields; both are the client's mistake, and dropping data silently is not an answer. A field may be as
    long as the body (the csv module's own limit, 128 kB, refused a long text that JSON takes): the body is
    already bounded by the records route's body limit, so the limit is raised to its length when needed."""
    if len(text) > csv.field_size_limit():
        csv.field_size_limit(len(text))
    reader = csv.reader(io.StringIO(text))
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, [])
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                raise RecordsError(400, "PGRST102", "All lines must have same number of fields")
            # PostgREST's reserved word: `NULL` is SQL null (an empty field stays an empty string).
            fields = zip(header, record, strict=True)
            rows.append({name: None if value == "NULL" else value for name, value in fields})
    except csv.Error as exc:  # (the default dialect is lenient: kept for what it still refuses)
        raise RecordsError(400, "PGRST102", "Invalid CSV body", str(exc)) from None
    return rows


def _unparsed_rows(api: ApiRequest, target: TableTarget) -> Payload | None:
    """The payload of an insert whose JSON body need not be parsed here, else None.

    PostgREST's documented shortcut: with `?columns=` an array body goes to Postgres as it is, and Postgres
    checks it (`@supabase/postgrest-js`, and so `@insforge/sdk`, name the columns of every array insert).
    A JSON scalar (`7`, `null`, `"x"`) goes too, in an array, as PostgREST wraps any body that is not one
    (`json_build_array`): Postgres refuses it as it refuses `[7]` (22023). Anything else takes the parsed
    path: an object (the usual single insert), a body that is not JSON (wrapped unparsed, `{..},{..}` would
    turn into valid JSON), not UTF-8, or that holds `""` somewhere (InsForge's quirk needs the rows)."""
    columns = target.query.columns
    content_type = api.content_type
    body = api.body.strip()
    if (
        columns is None
        or not (content_type in ("application/json", "") or content_type.endswith("+json"))
        or body.startswith(b"{")
        or _has_empty_string(body)
    ):
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    if not body.startswith(b"["):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        text = f"[{text}]"
    check_columns(target.table, columns)
    return Payload(columns, text, None, True)


def unparsed_body_error(payload: Payload) -> RecordsError | None:
    """For a table with encrypted columns, which parses even a `?columns=` body to encrypt it: what the
    parsed path answers for one that is not an array of objects (PGRST102: not JSON, or an item that is
    not an object), else None. Elsewhere such a body goes to Postgres as sent and its refusal is the answer
    (22023, or 22P02 for JSON that does not parse), as PostgREST sends it unparsed to `json_to_recordset`;
    parsed here, it would otherwise fail inside the encryption (a 500)."""
    if not payload.unparsed:
        return None
    try:
        rows = orjson.loads(payload.json)
    except orjson.JSONDecodeError as exc:
        return _invalid_json(exc)
    if rows.__class__ is not list or not set(map(type, rows)) <= {dict}:
        return _not_objects()
    return None


def _invalid_json(exc: orjson.JSONDecodeError) -> RecordsError:
    return RecordsError(400, "PGRST102", "Empty or invalid json", str(exc))


def _not_objects() -> RecordsError:
    return RecordsError(
        400, "PGRST102", "All object keys must match", "The body must be an object or an array of objects"
    )


def check_columns(table: Table, columns: Sequence[str]) -> None:
    for name in columns:
        if name not in table.columns:
            raise RecordsError(
                400, "PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache"
            )
