"""Stage four: status, headers and body from a statement's result row (PostgREST's `Response`).

Content-Range and the partial-range status, the negotiated media type (one object, CSV, nulls stripped),
`Preference-Applied`, `Location`, the `max-affected` check, and the status and headers a function asked
for through the response GUCs. Pure functions of the request, the plan and the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from kilnbase.db.schema_cache import Table
from kilnbase.records import media_type
from kilnbase.records.api_request import ApiRequest
from kilnbase.records.errors import RecordsError, valid_header
from kilnbase.records.mutate_plan import MutatePlan, plain_text
from kilnbase.records.preferences import Preferences


@dataclass(slots=True)
class RecordsResponse:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = media_type.JSON


def read_response(
    api: ApiRequest,
    row: Mapping[str, Any],
    offset: int,
    planned: int | None,
    *,
    single_value: bool = False,
    call: bool = False,
) -> RecordsResponse:
    """Status, Content-Range and body of a read, from the statement's (total, page_total, body) row; for a
    function `call`, with its max-affected check and response GUCs. `planned`: the planner's count, when
    the statement did not count."""
    shape = api.shape
    prefs = shape.prefs
    total: int | None = row["total"] if row["total"] is not None else planned
    page_total: int = row["page_total"]
    if call:
        check_max_affected(prefs, page_total)
    body: str = row["body"]
    lower, upper = offset, offset + page_total - 1
    status = range_status(lower, upper, total)
    headers = {"Content-Range": content_range(lower, upper, total)}
    applied = prefs.applied(mutation=False)
    if applied:
        headers["Preference-Applied"] = applied
    if status == 416:
        headers["Content-Range"] = content_range(1, 0, total)
        raise _range_error(total, headers)
    if single_value:
        body = singular(body, page_total) if page_total == 1 else "null"
    else:
        body = shaped(body, shape.media, page_total)
    if shape.head:
        body = ""
    response = RecordsResponse(status, body, headers, shape.media)
    return with_response_gucs(row, response) if call else response


def call_response(
    api: ApiRequest, row: Mapping[str, Any], *, returns_set: bool, void: bool
) -> RecordsResponse:
    """The answer of a call whose result is not read like a table's (`sql_builder.call_statement`): one
    value, or a set of them; with `Prefer: count=`, counted (a single value is one row)."""
    prefs = api.shape.prefs
    rows: int = row["page_total"] if returns_set else 1
    if returns_set:
        check_max_affected(prefs, rows)
    if void:
        return with_response_gucs(row, RecordsResponse(204, "", {}, None))
    body = row["body"] if row["body"] is not None else "null"
    if api.shape.head:
        body = ""
    headers = {"Content-Range": content_range(0, rows - 1, rows if prefs.count else None)}
    applied = prefs.applied(mutation=False)
    if applied:
        headers["Preference-Applied"] = applied
    return with_response_gucs(row, RecordsResponse(200, body, headers, api.shape.media))


def mutation_response(
    api: ApiRequest, plan: MutatePlan, body: str, affected: int, inserted: int | None = None
) -> RecordsResponse:
    """The answer of a write that changed `affected` rows; `body`: those rows as a JSON array, when the
    plan reads them back; `inserted`: how many of them an upsert inserted (it decides 200 or 201)."""
    prefs, media = api.shape.prefs, api.shape.media
    insert = plan.kind == "insert"
    total = affected if prefs.count == "exact" else None
    headers = {
        "Content-Range": content_range(1, 0, total) if insert else content_range(0, affected - 1, total)
    }
    post = insert and not plan.single_upsert
    applied = prefs.applied(
        mutation=True,
        upsert_allowed=post and plan.resolution is not None,
        missing_allowed=not plan.single_upsert,
    )
    if applied:
        headers["Preference-Applied"] = applied
    status = upsert_status(plan, inserted) if insert else 200
    if plan.representation:
        shaped_body = shaped(body, media, affected)  # (a single object is checked even for headers-only)
        if prefs.return_ != "headers-only":
            return RecordsResponse(status, shaped_body, headers, media)
    if not post:
        return RecordsResponse(204, "", headers, None)
    # A POST answers without a body; InsForge's proxy turns that blank body into `[]`.
    response = RecordsResponse(status, "[]", headers, media)
    if plan.location:
        location = _location(plan.table, body)
        if location:
            response.headers["Location"] = location
    return response


def upsert_status(plan: MutatePlan, inserted: int | None) -> int:
    """PostgREST's choice: a PUT is 201 when it inserted its row, else 200; a POST is 201 unless it
    merges duplicates and inserted nothing (every row updated an existing one, or there were none): 200."""
    if plan.single_upsert:
        return 201 if inserted else 200
    if plan.resolution == "merge-duplicates" and not inserted:
        return 200
    return 201


def check_max_affected(prefs: Preferences, affected: int) -> None:
    limit = prefs.strict_max_affected
    if limit is not None and affected > limit:
        raise RecordsError(
            400,
            "PGRST124",
            "Query result exceeds max-affected preference constraint",
            f"The query affects {affected} rows",
        )


def with_response_gucs(row: Mapping[str, Any], response: RecordsResponse) -> RecordsResponse:
    """The status and headers a function asked for with `response.status` / `response.headers`, checked as
    PostgREST checks them (500 PGRST112 / PGRST111, never a guess)."""
    status: str | None = row["response_status"]
    if status is not None:
        if not (len(status) == 3 and status.isascii() and status.isdigit() and 100 <= int(status) <= 599):
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


def _location(table: Table, body: str) -> str | None:
    rows = orjson.loads(body or "[]")
    if not rows or not table.primary_key:
        return None
    first = rows[0]
    parts = [f"{quote(name)}=eq.{quote(plain_text(first.get(name)))}" for name in table.primary_key]
    return f"/{quote(table.name)}?" + "&".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Content-Range and bodies


def content_range(lower: int, upper: int, total: int | None) -> str:
    """`lower-upper/total`, or `*/total` when the page is empty (PostgREST's `contentRangeH`)."""
    total_text = "*" if total is None else str(total)
    if total != 0 and lower <= upper:
        return f"{lower}-{upper}/{total_text}"
    return f"*/{total_text}"


def range_status(lower: int, upper: int, total: int | None) -> int:
    if total is None:
        return 200
    if lower > total:
        return 416
    if (1 + upper - lower) < total:
        return 206
    return 200


def singular(body: str, rows: int) -> str:
    """`[{...}]` -> `{...}`; anything but exactly one row is 406 PGRST116."""
    if rows != 1:
        raise RecordsError(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
            f"The result contains {rows} rows",
            None,
        )
    return body.strip()[1:-1].strip()


def shaped(body: str, media: str, rows: int) -> str:
    """A JSON array body in the negotiated media type: one object, CSV, nulls stripped, or as it is."""
    if media == media_type.OBJECT:
        return singular(body, rows)
    if media == media_type.OBJECT_STRIPPED:
        return orjson.dumps(_strip_nulls(orjson.loads(singular(body, rows)))).decode()
    if media == media_type.CSV:
        return body  # written by the statement (`sql_builder.CSV_BODY`)
    if media == media_type.STRIPPED:
        return orjson.dumps(_strip_nulls(orjson.loads(body))).decode()
    return body


def _strip_nulls(value: Any) -> Any:
    """Like Postgres' `json_strip_nulls`: null-valued keys go from every object, at any depth; nulls in
    arrays stay."""
    if isinstance(value, dict):
        return {key: _strip_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_strip_nulls(item) for item in value]
    return value
