"""A schema snapshot built in memory, for the tests of the pipeline's stages that need no database.

authors(id, name, email) <- posts(id, title, author_id, meta, score) <- comments(id, post_id, body), and a
few functions: the shapes `fixture_schema.sql` gives the database tests.
"""

from __future__ import annotations

from kilnbase.db.schema_cache import Column, ForeignKey, Parameter, Routine, SchemaSnapshot, Table
from kilnbase.identity.principal import ANONYMOUS
from kilnbase.records.api_request import (
    ApiRequest,
    RecordsRequest,
    RequestShape,
    api_request,
    request_shape,
    shape_key,
)

_TYPES = {"int": "N", "text": "S", "jsonb": "U", "boolean": "B"}


def _table(name: str, columns: dict[str, str], **extra: object) -> Table:
    table = Table(
        "public",
        name,
        "r",
        {
            column: Column(column, type_, _TYPES[type_], column != "id", None, False)
            for column, type_ in columns.items()
        },
        primary_key=("id",),
    )
    for key, value in extra.items():
        setattr(table, key, value)
    return table


def _link(snapshot: SchemaSnapshot, name: str, source: str, column: str, target: str) -> None:
    key = ForeignKey(name, "public", source, (column,), "public", target, ("id",))
    snapshot.tables[("public", source)].outgoing.append(key)
    snapshot.tables[("public", target)].incoming.append(key)


def _routine(
    name: str,
    parameters: tuple[Parameter, ...],
    return_type: str,
    kind: str,
    *,
    returns_set: bool = False,
    volatility: str = "s",
    return_table: tuple[str, str] | None = None,
) -> Routine:
    return Routine("public", name, parameters, return_type, kind, returns_set, volatility, return_table)


def memory_snapshot() -> SchemaSnapshot:
    snapshot = SchemaSnapshot(schemas=("public", "other"))
    for table in (
        _table("authors", {"id": "int", "name": "text", "email": "text"}, unique_keys=[("email",)]),
        _table("posts", {"id": "int", "title": "text", "author_id": "int", "meta": "jsonb", "score": "int"}),
        _table("comments", {"id": "int", "post_id": "int", "body": "text"}),
    ):
        snapshot.tables[(table.schema, table.name)] = table
    _link(snapshot, "posts_author_id_fkey", "posts", "author_id", "authors")
    _link(snapshot, "comments_post_id_fkey", "comments", "post_id", "posts")
    a, b = Parameter("a", "integer", False), Parameter("b", "integer", True)
    for routine in (
        _routine("add_numbers", (a, b), "integer", "scalar", volatility="i"),
        _routine(
            "posts_by",
            (Parameter("author", "integer", False),),
            "posts",
            "composite",
            returns_set=True,
            return_table=("public", "posts"),
        ),
        _routine("post_titles", (), "text", "scalar", returns_set=True),
        _routine("echo_json", (Parameter("", "jsonb", False),), "jsonb", "scalar", volatility="i"),
        _routine("touch", (), "void", "void", volatility="v"),
        _routine("twice", (Parameter("x", "integer", False),), "integer", "scalar"),
        _routine("twice", (Parameter("x", "text", False),), "text", "scalar"),
    ):
        snapshot.routines.setdefault((routine.schema, routine.name), []).append(routine)
    return snapshot


def records_request(
    method: str, resource: str, query_string: str = "", body: bytes = b"", /, **headers: str
) -> RecordsRequest:
    """A request for a table as the edge hands it over; header names with `_` for `-` (`accept_profile=`)."""
    return _request(method, resource, query_string, body, False, headers)


def rpc_request(
    method: str, function: str, query_string: str = "", body: bytes = b"", /, **headers: str
) -> RecordsRequest:
    """A request for a function, as `records_request`."""
    return _request(method, function, query_string, body, True, headers)


def _request(
    method: str, resource: str, query_string: str, body: bytes, is_rpc: bool, headers: dict[str, str]
) -> RecordsRequest:
    return RecordsRequest(
        method=method,
        resource=resource,
        is_rpc=is_rpc,
        query_string=query_string,
        headers={name.replace("_", "-"): value for name, value in headers.items()},
        body=body,
        principal=ANONYMOUS,
    )


def shape_of(request: RecordsRequest, snapshot: SchemaSnapshot | None = None) -> RequestShape:
    """The request's shape against `snapshot`'s schemas (by default the memory snapshot's)."""
    schemas = (snapshot or memory_snapshot()).schemas
    return request_shape(request, schemas, shape_key(request, schemas))


def api_of(request: RecordsRequest) -> ApiRequest:
    return api_request(request, shape_of(request))
