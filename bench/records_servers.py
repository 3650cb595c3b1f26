"""The two HTTP servers `bench/records.py` compares, as ASGI factories for uvicorn/granian.

`kilnbase_app`: the whole Kilnbase app. `bare_app`: the floor for any Python HTTP layer, a bare Starlette
handler that runs exactly the statement the records engine would send for the case (read from
`KB_BENCH_CASES`, written by the driver), in the same kind of transaction (role and claims, one pipeline:
`Database.statement_as_caller`, as the records engine runs a single statement).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.support.postgres import database_for

from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.identity.principal import CredentialKind, Principal
from kilnbase.records.execution import has_rows

ADMIN = Principal(db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"})


def statement_params(case: dict[str, Any], body: bytes) -> list[Any]:
    """A rendered case's parameters with the request body in its place, as the records engine passes it (one
    JSON object wrapped in an array where the statement takes rows)."""
    params = list(case["params"])
    if case["body_param"] is not None:
        text = body.decode()
        params[case["body_param"]] = f"[{text}]" if case["wrap_body"] and text.startswith("{") else text
    return params


def kilnbase_app(*, background: bool = True) -> Any:
    """As `kilnbase serve` builds it, logging included (one JSON line per request at the default level);
    without its background work where `background` is false (see `create_app`)."""
    from kilnbase.app import create_app
    from kilnbase.structured_log import configure_logging

    settings = Settings(data_dir=Path(os.environ["KB_BENCH_DATA"]), database_url=os.environ["DATABASE_URL"])
    configure_logging(settings.log_level)
    return create_app(settings, background=background)


def bare_app() -> Starlette:
    cases: dict[str, dict[str, Any]] = orjson.loads(Path(os.environ["KB_BENCH_CASES"]).read_bytes())
    state: dict[str, Database] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Kilnbase's own pools (autocommit connections, prepared statements, requests as the
        # authenticator), sized as the app's are here.
        database = database_for(os.environ["DATABASE_URL"], Settings(db_pool_min=8, db_pool_max=16))
        await database.open()
        state["db"] = database
        yield
        await database.close()

    async def handle(request: Request) -> Response:
        case = cases[request.path_params["case"]]
        # The body is read only where the statement takes it, as Kilnbase reads none for a GET: under granian
        # an `await receive()` costs a round trip between its threads (about 26 µs a GET, 60 µs a POST here).
        body = await request.body() if case["body_param"] is not None else b""
        params = statement_params(case, body)
        # As the records engine runs one statement, and reads its row after COMMIT.
        cur = await state["db"].statement_as_caller(ADMIN, case["sql"], params, read_only=case["read_only"])
        row = await cur.fetchone() if has_rows(cur) else None
        if case["status"] == 204:
            return Response(status_code=204)
        if row is None:
            return Response(b"[]", status_code=case["status"], media_type="application/json")
        return Response(row["body"], status_code=case["status"], media_type="application/json")

    return Starlette(
        routes=[Route("/case/{case}", handle, methods=["GET", "POST", "PATCH"])], lifespan=lifespan
    )
