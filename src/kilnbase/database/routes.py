"""HTTP edge of the database admin API (all admin): tables, catalog listings, raw SQL, custom migrations."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kilnbase.database import bulk_data, catalog, custom_migrations, raw_sql
from kilnbase.database.tables import TableService, identifier
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import require_admin
from kilnbase.logs import audit
from kilnbase.server.runtime import runtime_of


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, default=str), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise ApiError(400, "INVALID_INPUT", "The body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_INPUT", "The body must be a JSON object.")
    return body


def _client_ip(request: Request) -> str | None:
    """The peer address for the audit log, when it is one (test transports use a name)."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def _schema(request: Request) -> str:
    return identifier(request.query_params.get("schema", "public"), "schema")


def _tables(request: Request) -> TableService:
    return TableService(runtime_of(request).database)


async def list_tables(request: Request) -> Response:
    require_admin(request)
    return _json(await _tables(request).list_tables(_schema(request)))


async def create_table(request: Request) -> Response:
    require_admin(request)
    result = await _tables(request).create_table(await _body(request))
    await _refresh_schema(request)
    return _json(result, 201)


async def table_schema(request: Request) -> Response:
    require_admin(request)
    table = identifier(request.path_params["table"], "table")
    return _json(await _tables(request).table_schema(table))


async def update_table(request: Request) -> Response:
    require_admin(request)
    result = await _tables(request).update_table(request.path_params["table"], await _body(request))
    await _refresh_schema(request)
    return _json(result)


async def delete_table(request: Request) -> Response:
    require_admin(request)
    result = await _tables(request).delete_table(request.path_params["table"])
    await _refresh_schema(request)
    return _json(result)


async def list_catalog(request: Request) -> Response:
    require_admin(request)
    database = runtime_of(request).database
    kind = request.url.path.rsplit("/", 1)[-1]
    if kind == "schemas":
        return _json(await catalog.schemas(database))
    listing = {
        "functions": catalog.functions,
        "indexes": catalog.indexes,
        "policies": catalog.policies,
        "triggers": catalog.triggers,
    }[kind]
    return _json(await listing(database, _schema(request)))


async def _run_raw_sql(request: Request, *, unrestricted: bool) -> Response:
    principal = require_admin(request)
    body = await _body(request)
    query = body.get("query")
    params = body.get("params", [])
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "MISSING_FIELD", "query is required", "Send {query, params?, explain?}.")
    if not isinstance(params, list):
        raise ApiError(400, "INVALID_INPUT", "params must be an array")
    result = await raw_sql.run(
        runtime_of(request).database,
        principal,
        query,
        params,
        explain=body.get("explain") is True,
        unrestricted=unrestricted,
        ip=_client_ip(request),
    )
    await _refresh_schema(request)
    return _json(result.as_json())


async def rawsql(request: Request) -> Response:
    return await _run_raw_sql(request, unrestricted=False)


async def rawsql_unrestricted(request: Request) -> Response:
    return await _run_raw_sql(request, unrestricted=True)


async def _upload(request: Request) -> tuple[bytes, str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "INVALID_INPUT", "Send multipart/form-data with a 'file' field.")
    form = await request.form(max_part_size=100 * 1024 * 1024)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "INVALID_INPUT", "File is required", "Attach the file as the 'file' field.")
    return await upload.read(), upload.filename or "", form


async def bulk_upsert(request: Request) -> Response:
    principal = require_admin(request)
    content, filename, form = await _upload(request)
    table = form.get("table")
    if not isinstance(table, str) or not table:
        raise ApiError(400, "MISSING_FIELD", "table is required")
    upsert_key = form.get("upsertKey")
    schema = form.get("schema") or "public"
    runtime = runtime_of(request)
    result = await bulk_data.bulk_upsert(
        runtime.database,
        schema=schema if isinstance(schema, str) else "public",
        table_name=table,
        rows=bulk_data.parse_rows(content, filename),
        upsert_key=upsert_key if isinstance(upsert_key, str) and upsert_key else None,
    )
    await audit.record(
        runtime.database,
        actor=principal.actor,
        action="BULK_UPSERT",
        module="DATABASE",
        details={"table": table, "filename": filename, "rowsAffected": result["rowsAffected"]},
        ip=_client_ip(request),
    )
    return _json(result)


async def export_database(request: Request) -> Response:
    principal = require_admin(request)
    database = runtime_of(request).database
    result = await bulk_data.export(database, await _body(request))
    await audit.record(
        database,
        actor=principal.actor,
        action="EXPORT_DATABASE",
        module="DATABASE",
        details={"format": result["format"]},
        ip=_client_ip(request),
    )
    return _json(result)


async def import_database(request: Request) -> Response:
    principal = require_admin(request)
    content, filename, form = await _upload(request)
    truncate = str(form.get("truncate", "false")).lower() == "true"
    database = runtime_of(request).database
    result = await bulk_data.import_sql(database, content, filename, truncate)
    await audit.record(
        database,
        actor=principal.actor,
        action="IMPORT_DATABASE",
        module="DATABASE",
        details={"filename": filename, "truncate": truncate, "rowsImported": result["rowsImported"]},
        ip=_client_ip(request),
    )
    await _refresh_schema(request)
    return _json(result)


async def list_migrations(request: Request) -> Response:
    require_admin(request)
    return _json(await custom_migrations.list_migrations(runtime_of(request).database))


async def create_migration(request: Request) -> Response:
    principal = require_admin(request)
    body = await _body(request)
    ip = _client_ip(request)
    result = await custom_migrations.apply(runtime_of(request).database, principal, body, ip)
    await _refresh_schema(request)
    return _json(result, 201)


async def dry_run_migration(request: Request) -> Response:
    require_admin(request)
    body = await _body(request)
    return JSONResponse(custom_migrations.dry_run(body.get("sql")))


async def _refresh_schema(request: Request) -> None:
    """DDL notifies every process; this one reloads at once so the caller's next request sees it."""
    cache = runtime_of(request).schema_cache
    if cache is not None:
        await cache.reload()


routes = [
    Route("/api/database/tables", list_tables, methods=["GET"]),
    Route("/api/database/tables", create_table, methods=["POST"]),
    Route("/api/database/tables/{table}/schema", table_schema, methods=["GET"]),
    Route("/api/database/tables/{table}/schema", update_table, methods=["PATCH"]),
    Route("/api/database/tables/{table}", delete_table, methods=["DELETE"]),
    *(
        Route(f"/api/database/{kind}", list_catalog, methods=["GET"])
        for kind in ("schemas", "functions", "indexes", "policies", "triggers")
    ),
    Route("/api/database/advance/rawsql", rawsql, methods=["POST"]),
    Route("/api/database/advance/rawsql/unrestricted", rawsql_unrestricted, methods=["POST"]),
    Route("/api/database/advance/bulk-upsert", bulk_upsert, methods=["POST"]),
    Route("/api/database/advance/export", export_database, methods=["POST"]),
    Route("/api/database/advance/import", import_database, methods=["POST"]),
    Route("/api/database/migrations", list_migrations, methods=["GET"]),
    Route("/api/database/migrations", create_migration, methods=["POST"]),
    Route("/api/database/migrations/dry-run", dry_run_migration, methods=["POST"]),
]
