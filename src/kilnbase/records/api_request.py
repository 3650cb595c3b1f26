"""Stage one: the request as one plain value (PostgREST's `ApiRequest`). No database, no SQL.

The edge hands over a `RecordsRequest` (method, path parameter, query string, the few headers the engine
reads, body, caller). `shape_key` normalises what the answer depends on besides the body and the caller:
the schema asked for, the preferences, the media type and the range, each reduced to what the engine
honours. A request's `RequestShape` is built once per key and schema snapshot (`plan_cache.PlanCache`), so
a repeated URL is not parsed again; `ApiRequest` is that shape with this request's body and caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl

from kilnbase.identity.principal import Principal
from kilnbase.records.errors import RecordsError
from kilnbase.records.media_type import negotiate
from kilnbase.records.preferences import Preferences, parse_preferences
from kilnbase.records.query_grammar import parse_range_header

Action = Literal["read", "insert", "update", "upsert", "delete", "call"]
_TABLE_ACTIONS: dict[str, Action] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "insert",
    "PATCH": "update",
    "PUT": "upsert",
    "DELETE": "delete",
}
#: `Range: first-last`, `last` None when open-ended.
PageRange = tuple[int, int | None]
#: (method, is_rpc, resource, query string, profile header, preferences, media type, range): the shape of a
#: request with every header normalised; the URL is kept as received (it is what the plan is made of).
ShapeKey = tuple[str, bool, str, str, str | None, Preferences, str, PageRange | None]
#: A request whose resource and query string are longer than this is planned afresh every time, never
#: remembered: the memory holds at most `PLAN_CACHE_SIZE` keys of bounded size.
MAX_REMEMBERED_URL = 8192


class Features(NamedTuple):
    """PostgREST's opt-in features this server has on (`config.RecordsSettings`)."""

    aggregates: bool = False
    plan: bool = False
    tx_override: bool = False  # `Prefer: tx=` is honoured
    max_rows: int | None = None  # the most rows a read answers with (`db-max-rows`)


NO_FEATURES = Features()


@dataclass
class RecordsRequest:
    """The HTTP request as the edge hands it over."""

    method: str
    resource: str
    is_rpc: bool
    query_string: str  # as received: a repeated URL is not parsed again
    headers: Mapping[str, str]  # lower-case names; `prefer` joined with ","
    body: bytes
    principal: Principal


@dataclass(frozen=True, eq=False, slots=True)
class RequestShape:
    """All of a request but its body and caller, parsed: what its plan and statement depend on.

    Compared by identity: the plan cache hands out one shape per key, and keys what it remembers for the
    shape by the shape itself."""

    key: ShapeKey | None  # None: not remembered (see `shape_key`)
    action: Action | None  # None: a method no resource has (405)
    method: str
    resource: str
    query_string: str
    schema: str
    prefs: Preferences
    media: str
    range: PageRange | None  # for GET and HEAD
    range_error: RecordsError | None = None  # a Range header that cannot be served, raised when paging
    aggregates: bool = False  # aggregate functions are allowed in `select=`
    max_rows: int | None = None  # the most rows a read answers with, whatever the page asks

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@dataclass(slots=True)
class ApiRequest:
    """The one value that goes from stage to stage: the shape, and this request's body and caller."""

    shape: RequestShape
    body: bytes
    content_type: str  # the body's media type, without parameters, in lower case
    principal: Principal


def api_request(request: RecordsRequest, shape: RequestShape) -> ApiRequest:
    content_type = request.headers.get("content-type")
    return ApiRequest(
        shape,
        request.body,
        "application/json" if content_type is None else content_type.split(";")[0].strip().lower(),
        request.principal,
    )


def _profile_header(method: str) -> str:
    return "accept-profile" if method in ("GET", "HEAD") else "content-profile"


def shape_key(
    request: RecordsRequest, schemas: tuple[str, ...], features: Features = NO_FEATURES
) -> ShapeKey | None:
    """The request's shape, every header normalised; None when it is not to be remembered: a header that
    names an unknown schema or that the stages will refuse (they do, in their own order, when the shape is
    built), or a URL longer than `MAX_REMEMBERED_URL`."""
    method = request.method.upper()
    headers = request.headers
    profile = headers.get(_profile_header(method))
    if profile is not None and profile not in schemas:
        return None
    if len(request.query_string) + len(request.resource) > MAX_REMEMBERED_URL:
        return None
    range_header = headers.get("range") if method in ("GET", "HEAD") else None
    try:
        prefs = parse_preferences(headers.get("prefer"), allow_tx=features.tx_override)
        media = negotiate(headers.get("accept"), plan=features.plan)
        page_range = parse_range_header(range_header) if range_header else None
    except RecordsError:
        return None
    return (method, request.is_rpc, request.resource, request.query_string, profile, prefs, media, page_range)


def request_shape(
    request: RecordsRequest,
    schemas: tuple[str, ...],
    key: ShapeKey | None,
    features: Features = NO_FEATURES,
) -> RequestShape:
    """The shape for `key` (from `shape_key`); refusals in PostgREST's order: schema, preferences, media
    type; a bad Range header when the page is computed."""
    method = request.method.upper()
    schema = _schema(request, method, schemas)
    range_error: RecordsError | None = None
    if key is not None:
        prefs, media, page_range = key[5], key[6], key[7]
    else:
        prefs = parse_preferences(request.headers.get("prefer"), allow_tx=features.tx_override)
        media = negotiate(request.headers.get("accept"), plan=features.plan)
        range_header = request.headers.get("range") if method in ("GET", "HEAD") else None
        page_range = None
        if range_header:
            try:
                page_range = parse_range_header(range_header)
            except RecordsError as exc:
                range_error = exc
    action: Action | None = "call" if request.is_rpc else _TABLE_ACTIONS.get(method)
    return RequestShape(
        key,
        action,
        method,
        request.resource,
        request.query_string,
        schema,
        prefs,
        media,
        page_range,
        range_error,
        features.aggregates,
        features.max_rows,
    )


def query_pairs(query_string: str) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, decoded."""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise RecordsError(400, "PGRST100", "NUL characters are not allowed in the query string")
    return pairs


def _schema(request: RecordsRequest, method: str, schemas: tuple[str, ...]) -> str:
    """`?schema=`, else the profile header (Accept-Profile to read, Content-Profile to write), else public."""
    schema = None
    for key, value in query_pairs(request.query_string):
        if key == "schema":
            schema = value
    if schema is None:
        schema = request.headers.get(_profile_header(method))
    schema = schema or "public"
    if schema not in schemas:
        raise RecordsError(
            406,
            "PGRST106",
            f"Invalid schema: {schema}",
            None,
            "Only the following schemas are exposed: " + ", ".join(schemas),
        )
    return schema
