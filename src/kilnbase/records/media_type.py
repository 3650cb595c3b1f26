"""The media types the records API answers in, and the choice among them for an `Accept` header.

PostgREST's `MediaType` and `Plan/Negotiate`: what the client accepts, normalised to one of four answers
before anything else reads it, so the per-shape memory keys on the choice, never on the header's text.
"""

from __future__ import annotations

from typing import NamedTuple

from kilnbase.records.errors import RecordsError

JSON = "application/json"
OBJECT = "application/vnd.pgrst.object+json"
CSV = "text/csv"
#: A JSON array whose objects lose their null-valued keys (PostgREST's `json_strip_nulls`).
STRIPPED = "application/vnd.pgrst.array+json;nulls=stripped"
#: One object, which loses its null-valued keys.
OBJECT_STRIPPED = "application/vnd.pgrst.object+json;nulls=stripped"
#: The media types that answer with one object (406 PGRST116 for any other number of rows).
SINGULAR = frozenset({OBJECT, OBJECT_STRIPPED})
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
    OBJECT_STRIPPED: OBJECT_STRIPPED,
}
#: The media types that take `nulls=stripped`, and what they become with it.
_STRIPPABLE = {
    "application/vnd.pgrst.array+json": STRIPPED,
    "application/vnd.pgrst.object+json": OBJECT_STRIPPED,
    "application/vnd.pgrst.object": OBJECT_STRIPPED,
}


#: PostgREST's execution plan media types (`db-plan-enabled`), and the EXPLAIN options they take, in order.
PLAN_PREFIX = "application/vnd.pgrst.plan+"
_PLAN_FORMATS = {
    "application/vnd.pgrst.plan": "text",
    "application/vnd.pgrst.plan+text": "text",
    "application/vnd.pgrst.plan+json": "json",
}
PLAN_OPTIONS = ("analyze", "verbose", "settings", "buffers", "wal")


class PlanRequest(NamedTuple):
    """What an execution-plan media type asks for: EXPLAIN's format and options, and the media type whose
    statement is explained."""

    format: str  # "json" or "text"
    for_media: str
    options: tuple[str, ...]


def plan_request(media: str) -> PlanRequest | None:
    """The plan a negotiated media type asks for (see `_plan_media`), or None for any other."""
    if not media.startswith(PLAN_PREFIX):
        return None
    head, *params = media.split("; ")
    values = dict(param.split("=", 1) for param in params)
    options = tuple(values["options"].split("|")) if "options" in values else ()
    return PlanRequest(head.removeprefix(PLAN_PREFIX), values["for"].strip('"'), options)


def _plan_media(media: str, params: list[str]) -> str | None:
    """The canonical media type of a plan request (PostgREST's `toMime`): format, `for=` and options in
    PostgREST's order, so equal requests are one shape. None when `for=` names no media type we have."""
    values: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    for_media = _ACCEPTED.get(values.get("for", JSON).lower())
    if for_media is None:
        return None
    chosen = set(values.get("options", "").split("|"))
    options = [option for option in PLAN_OPTIONS if option in chosen]
    canonical = f'{PLAN_PREFIX}{_PLAN_FORMATS[media]}; for="{for_media}"'
    return canonical + (f"; options={'|'.join(options)}" if options else "")


def negotiate(accept: str | None, *, plan: bool = False) -> str:
    """The response media type for an `Accept` header; 406 PGRST107 when none is available. The plan
    media types are available only with `plan` (`KILNBASE_DB_PLAN_ENABLED`)."""
    if not accept or not accept.strip():
        return JSON
    if "," not in accept and ";" not in accept:
        # One media type without parameters (what clients send): the loop below would choose it alone.
        found = _ACCEPTED.get(accept.strip().lower())
        if found is not None:
            return found
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
        if media in _STRIPPABLE and "nulls=stripped" in (p.replace(" ", "") for p in params):
            media = _STRIPPABLE[media]
        elif media in _PLAN_FORMATS:
            plan_media = _plan_media(media, params) if plan else None
            if plan_media is None:
                continue
            media = plan_media
        offered.append((-quality, index, media))
    for negative_quality, _, media in sorted(offered):
        if negative_quality < 0 and media.startswith(PLAN_PREFIX):
            return media
        if negative_quality < 0 and media in _ACCEPTED:
            return _ACCEPTED[media]
    raise RecordsError(406, "PGRST107", f"None of these media types are available: {accept}")
