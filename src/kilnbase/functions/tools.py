"""The functions capability's MCP tools: the same `FunctionsService` calls as `/api/functions` (admin,
audited by the service), and an invocation through the same `Invocation` app as `/functions/:slug`, so it
meets the same concurrency limit, time limit and log. Names follow InsForge's MCP server where it has the
tool (`create-function`, `get-function`, `update-function`, `delete-function`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field
from starlette.types import Message

from kilnbase.capability import Tool
from kilnbase.functions.definitions import MAX_DESCRIPTION, MAX_NAME, MAX_SLUG
from kilnbase.functions.invocation import PREFIX, Invocation
from kilnbase.functions.service import FunctionsService
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor

#: The most of a request body a tool sends, and of a response body it returns.
MAX_INVOKE_BYTES = 1024 * 1024

Slug = Annotated[
    str,
    Field(description="The function's slug (letters, digits, - and _)", min_length=1, max_length=MAX_SLUG),
]
Code = Annotated[
    str,
    Field(
        description="TypeScript/JavaScript: a module whose default export (or Deno.serve handler) takes a "
        "Request and returns a Response",
        min_length=1,
        max_length=1024 * 1024,
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Description = Annotated[str | None, Field(max_length=MAX_DESCRIPTION)]
Status = Literal["draft", "active"]
SecretKeys = Annotated[
    list[Annotated[str, Field(max_length=255)]] | None,
    Field(
        description="Secret keys the function may read (absent or null: every active secret)", max_length=200
    ),
]


def _body(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


async def invoke(
    invocation: Invocation,
    actor: Actor,
    slug: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> dict[str, Any]:
    """Run one request through the invocation app and collect its answer (the body cut at the bound)."""
    payload = b"" if body is None else body.encode() if isinstance(body, str) else orjson.dumps(body)
    wire = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    if body is not None and not any(name == b"content-type" for name, _ in wire):
        wire.append((b"content-type", b"text/plain" if isinstance(body, str) else b"application/json"))
    if payload:
        wire.append((b"content-length", str(len(payload)).encode()))
    target, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": PREFIX + slug + ("/" + target.lstrip("/") if target.strip("/") else ""),
        "raw_path": b"",
        "root_path": "",
        "query_string": query.encode(),
        "headers": wire,
        "client": (actor.ip or "127.0.0.1", 0),
        "server": None,
    }
    sent = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await never.wait()  # the caller never leaves: the function's own time limit ends a long answer
        return {"type": "http.disconnect"}

    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0

    async def send(message: Message) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                response_headers[name.decode("latin-1")] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if size < MAX_INVOKE_BYTES:
                chunks.append(chunk[: MAX_INVOKE_BYTES - size])
            size += len(chunk)

    await invocation(scope, receive, send)
    data = b"".join(chunks)
    result: dict[str, Any] = {"status": status, "headers": response_headers}
    content_type = response_headers.get("content-type", "")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        result["bodyBase64"] = base64.b64encode(data).decode()
    else:
        result["body"] = text
        if "json" in content_type and size <= MAX_INVOKE_BYTES:
            with contextlib.suppress(orjson.JSONDecodeError):
                result["body"] = orjson.loads(data)
    if size > MAX_INVOKE_BYTES:
        result["truncated"] = f"the body was {size} bytes; the first {MAX_INVOKE_BYTES} are shown"
    return result


async def _require_served(service: FunctionsService, slug: str) -> None:
    """Refuse, as a tool error, to invoke a function that no URL serves: `/functions/:slug` answers such a
    call 404 like any function may answer, and the tool's result would then read as the function's own
    answer to an agent that mistyped the slug or left the function a draft."""
    definition = await service.runtime.definition(slug)
    if definition is None:
        raise ApiError(
            404,
            "FUNCTION_NOT_FOUND",
            f"Function not found: {slug}",
            "list-functions lists the functions; create-function deploys one.",
        )
    if definition.status != "active":
        raise ApiError(
            409,
            "FUNCTION_NOT_ACTIVE",
            f"Function {slug} is {definition.status}: it serves no calls.",
            f"Set it active with update-function {{slug: {slug!r}, status: 'active'}}, then invoke it.",
        )


def functions_tools(service: FunctionsService) -> list[Tool]:
    invocation = Invocation(service.runtime)

    async def list_functions(actor: Actor) -> dict[str, Any]:
        return await service.list(actor)

    async def get_function(actor: Actor, slug: Slug) -> dict[str, Any]:
        return await service.get(actor, slug)

    async def create_function(
        actor: Actor,
        name: Name,
        code: Code,
        slug: Annotated[str | None, Field(max_length=MAX_SLUG, description="Defaults from the name")] = None,
        description: Description = None,
        status: Status = "active",
        secrets: SecretKeys = None,
    ) -> dict[str, Any]:
        body = _body(name=name, code=code, slug=slug, description=description, status=status, secrets=secrets)
        return await service.create(actor, body)

    async def update_function(
        actor: Actor,
        slug: Slug,
        name: Annotated[str | None, Field(min_length=1, max_length=MAX_NAME)] = None,
        code: Annotated[str | None, Field(min_length=1, max_length=1024 * 1024)] = None,
        description: Description = None,
        status: Status | None = None,
        secrets: SecretKeys = None,
    ) -> dict[str, Any]:
        body = _body(name=name, code=code, description=description, status=status, secrets=secrets)
        return await service.update(actor, slug, body)

    async def delete_function(actor: Actor, slug: Slug) -> dict[str, Any]:
        return await service.delete(actor, slug)

    async def invoke_function(
        actor: Actor,
        slug: Slug,
        method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST",
        path: Annotated[str, Field(max_length=2048, description="After the slug, e.g. /items?limit=5")] = "",
        body: Annotated[
            Any, Field(description="A JSON value (sent as JSON) or a string (sent as text); at most 1 MB")
        ] = None,
        headers: Annotated[
            dict[str, Annotated[str, Field(max_length=8192)]] | None,
            Field(description="Request headers", max_length=50),
        ] = None,
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        await _require_served(service, slug)
        return await invoke(invocation, actor, slug, method, path, body, headers or {})

    async def get_function_logs(
        actor: Actor, slug: Slug, limit: Annotated[int, Field(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        return await service.logs(actor, slug, limit)

    return [
        Tool("list-functions", "List the edge functions, with the runtime's health.", list_functions),
        Tool("get-function", "A function's definition and code.", get_function),
        Tool(
            "create-function",
            "Deploy a new edge function (type-checked first; active unless status is draft).",
            create_function,
            False,
        ),
        Tool(
            "update-function",
            "Change a function's code, name, description, status or secrets.",
            update_function,
            False,
        ),
        Tool(
            "delete-function",
            "Delete a function: its URL stops answering.",
            delete_function,
            read_only=False,
            needs_approval=lambda arguments: f"deletes function {arguments.get('slug')}",
        ),
        Tool(
            "invoke-function",
            "Call an active function (method, path, body) and return its status, headers and body.",
            invoke_function,
            read_only=False,
            invokes=True,
        ),
        Tool(
            "get-function-logs",
            "A function's newest log lines: its invocations and what it printed.",
            get_function_logs,
        ),
    ]
