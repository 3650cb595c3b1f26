"""The media types the records API answers in, and the choice among them for an `Accept` header.

PostgREST's `MediaType` and `Plan/Negotiate`: what the client accepts, normalised to one of four answers
before anything else reads it, so the per-shape memory keys on the choice, never on the header's text.
"""

from __future__ import annotations

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


def negotiate(accept: str | None) -> str:
    """The response media type for an `Accept` header; 406 PGRST107 when none is available."""
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
        offered.append((-quality, index, media))
    for negative_quality, _, media in sorted(offered):
        if negative_quality < 0 and media in _ACCEPTED:
            return _ACCEPTED[media]
    raise RecordsError(406, "PGRST107", f"None of these media types are available: {accept}")
