"""HTTP edge of the database admin API (all admin): tables, catalog listings, raw SQL, bulk data, custom
migrations. Handlers parse the request and shape the answer; `DatabaseAdmin` does the rest."""

from __future__ import annotations

from typing import Any, cast

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.database.admin import CatalogKind, DatabaseAdmin
from kilnbase.database.tables import identifier
from kilnbase.database.tools import database_tools
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import read_object
from kilnbase.http.responses import json_response, paginated_response

#: The upload endpoints, whose bodies fall under the upload limit.
UPLOAD_PATHS = ("/api/database/advance/bulk-upsert", "/api/database/advance/import")
#: Changes nothing (rolled back): agent keys reach it with `database:read` (the service asks more of an
#: agent's simulated writes).
SIMULATE_PATH = "/api/database/policies/simulate"
_CATALOG_KINDS: tuple[CatalogKind, ...] = ("schemas", "functions", "indexes", "policies", "triggers")


def _schema(request: Request) -> str:
    return identifier(request.query_params.get("schema", "public"), "schema")


async def _upload(request: Request) -> tuple[bytes, str, FormData]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Send multipart/form-data with a 'file' field.",
            "Send the file as the 'file' field of a multipart/form-data body.",
        )
    form = await request.form(max_part_size=100 * 1024 * 1024)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "INVALID_INPUT", "File is required", "Attach the file as the 'file' field.")
    return await upload.read(), upload.filename or "", form


def _form_text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


class DatabaseRoutes:
    def __init__(self, admin: DatabaseAdmin) -> None:
        self.admin = admin

    async def list_tables(self, request: Request) -> Response:
        return json_response(await self.admin.list_tables(admin_actor(request), _schema(request)))

    async def create_table(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.create_table(actor, await read_object(request)), 201)

    async def table_schema(self, request: Request) -> Response:
        actor = admin_actor(request)
        table = identifier(request.path_params["table"], "table")
        return json_response(await self.admin.table_schema(actor, table))

    async def update_table(self, request: Request) -> Response:
        actor = admin_actor(request)
        body = await read_object(request)
        return json_response(await self.admin.update_table(actor, request.path_params["table"], body))

    async def delete_table(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.delete_table(actor, request.path_params["table"]))

    async def browse_table(self, request: Request) -> Response:
        actor = admin_actor(request)
        params = dict(request.query_params)
        page = await self.admin.browse_table(actor, request.path_params["table"], params)
        return paginated_response(page.rows, page.total, page.offset)

    async def list_catalog(self, request: Request) -> Response:
        actor = admin_actor(request)
        kind = cast(CatalogKind, request.url.path.rsplit("/", 1)[-1])
        return json_response(await self.admin.catalog(actor, kind, _schema(request)))

    async def simulate_policy(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.simulate_policy(actor, await read_object(request)))

    async def _raw_sql(self, request: Request, *, unrestricted: bool) -> Response:
        actor = admin_actor(request)
        body = await read_object(request)
        query = body.get("query")
        params = body.get("params", [])
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "MISSING_FIELD", "query is required", "Send {query, params?, explain?}.")
        if not isinstance(params, list):
            raise ApiError(
                400,
                "INVALID_INPUT",
                "params must be an array",
                "Send params as a JSON array, one value for each $n placeholder.",
            )
        result = await self.admin.raw_sql(
            actor, query, params, explain=body.get("explain") is True, unrestricted=unrestricted
        )
        return json_response(result.as_json())

    async def rawsql(self, request: Request) -> Response:
        return await self._raw_sql(request, unrestricted=False)

    async def rawsql_unrestricted(self, request: Request) -> Response:
        return await self._raw_sql(request, unrestricted=True)

    async def bulk_upsert(self, request: Request) -> Response:
        actor = admin_actor(request)
        content, filename, form = await _upload(request)
        table = _form_text(form, "table")
        if table is None:
            raise ApiError(
                400,
                "MISSING_FIELD",
                "table is required",
                "Send the target table's name as the 'table' field of the form.",
            )
        result = await self.admin.bulk_upsert(
            actor,
            schema=_form_text(form, "schema") or "public",
            table=table,
            content=content,
            filename=filename,
            upsert_key=_form_text(form, "upsertKey"),
        )
        return json_response(result)

    async def export_database(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.export(actor, await read_object(request)))

    async def import_database(self, request: Request) -> Response:
        actor = admin_actor(request)
        content, filename, form = await _upload(request)
        truncate = str(form.get("truncate", "false")).lower() == "true"
        return json_response(await self.admin.import_sql(actor, content, filename, truncate))

    async def list_migrations(self, request: Request) -> Response:
        return json_response(await self.admin.list_migrations(admin_actor(request)))

    async def create_migration(self, request: Request) -> Response:
        actor = admin_actor(request)
        return json_response(await self.admin.apply_migration(actor, await read_object(request)), 201)

    async def dry_run_migration(self, request: Request) -> Response:
        actor = admin_actor(request)
        body: dict[str, Any] = await read_object(request)
        return json_response(self.admin.dry_run_migration(actor, body))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/database/tables", self.list_tables, methods=["GET"]),
            Route("/api/database/tables", self.create_table, methods=["POST"]),
            Route("/api/database/tables/{table}/schema", self.table_schema, methods=["GET"]),
            Route("/api/database/tables/{table}/schema", self.update_table, methods=["PATCH"]),
            Route("/api/database/tables/{table}", self.delete_table, methods=["DELETE"]),
            Route("/api/database/browse/{table}", self.browse_table, methods=["GET"]),
            Route(SIMULATE_PATH, self.simulate_policy, methods=["POST"]),
            *(Route(f"/api/database/{kind}", self.list_catalog, methods=["GET"]) for kind in _CATALOG_KINDS),
            Route("/api/database/advance/rawsql", self.rawsql, methods=["POST"]),
            Route("/api/database/advance/rawsql/unrestricted", self.rawsql_unrestricted, methods=["POST"]),
            Route("/api/database/advance/bulk-upsert", self.bulk_upsert, methods=["POST"]),
            Route("/api/database/advance/export", self.export_database, methods=["POST"]),
            Route("/api/database/advance/import", self.import_database, methods=["POST"]),
            Route("/api/database/migrations", self.list_migrations, methods=["GET"]),
            Route("/api/database/migrations", self.create_migration, methods=["POST"]),
            Route("/api/database/migrations/dry-run", self.dry_run_migration, methods=["POST"]),
        ]


def capability(admin: DatabaseAdmin) -> Capability:
    return Capability(
        "database",
        DatabaseRoutes(admin).routes(),
        tools=database_tools(admin),
        body_limits=dict.fromkeys(UPLOAD_PATHS, "upload"),
        reads=(SIMULATE_PATH,),
    )
