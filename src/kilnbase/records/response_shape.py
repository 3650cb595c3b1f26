"""Stage four helpers: Content-Range, partial-range status, media types and CSV, as PostgREST does them."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from kilnbase.records.errors import RecordsError

JSON = "application/json"
OBJECT = "application/vnd.pgrst.object+json"
CSV = "text/csv"
#: A JSON array whose objects lose their null-valued keys (PostgREST's `json_strip_nulls`).
STRIPPED = "application/vnd.pgrst.array+json;nulls=stripped"
_ACCEPTED = {
    "*/*": JSON,
    "application/*": JSON,
    JSON: JSON,
    "application/vnd.pgrst.array+json": JSON,
    OBJECT: OBJECT,
    "application/vnd.pgrst.object": OBJECT,
    CSV: CSV,
    "text/*": CSV,
    STRIPPED: STRIPPED,
}


def negotiate(accept: str | None) -> str:
    """The response media type for an `Accept` header; 406 PGRST107 when none is available."""
    if not accept or not accept.strip():
        return JSON
    offered: list[tuple[float, int, str]] = []
    for index, raw in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in raw.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media == "application/vnd.pgrst.array+json" and "nulls=stripped" in (
            p.replace(" ", "") for p in params
        ):
            media = STRIPPED
        offered.append((-quality, index, media))
    for negative_quality, _, media in sorted(offered):
        if negative_quality < 0 and media in _ACCEPTED:
            return _ACCEPTED[media]
    raise RecordsError(406, "PGRST107", f"None of these media types are available: {accept}")


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
            "JSON object requested, multiple (or no) rows returned",
            f"The result contains {rows} rows",
            None,
        )
    return body.strip()[1:-1].strip()


def shaped(body: str, media: str, rows: int) -> str:
    """A JSON array body in the negotiated media type: one object, CSV, nulls stripped, or as it is."""
    if media == OBJECT:
        return singular(body, rows)
    if media == CSV:
        return to_csv(body)
    if media == STRIPPED:
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


def to_csv(body: str) -> str:
    rows: list[dict[str, Any]] = orjson.loads(body)
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(rows[0])
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_value(row.get(name)) for name in header])
    return out.getvalue().rstrip("\n")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
