"""Sending JSON: as a Starlette `Response` from request/response endpoints, or straight to an ASGI `send`
from the plain ASGI endpoints on the hot paths (records, chat completions), where a Response object per call
would only be built to be taken apart again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """`body` as JSON (values JSON has no type for, such as Decimal or datetime, as their text)."""
    return Response(orjson.dumps(body, default=str), status_code=status, media_type=JSON, headers=headers)


def paginated_response(rows: list[Any], total: int, offset: int) -> Response:
    """InsForge's paginatedResponse: the rows as they are, the range in PostgREST's header, 206 for a part."""
    end = min(offset + len(rows) - 1, total - 1)
    span = f"{offset}-{end}" if rows else "*"  # (PostgREST's form for an empty page)
    headers = {"Content-Range": f"{span}/{total}", "Preference-Applied": "count=exact"}
    return json_response(rows, 206 if len(rows) < total else 200, headers)


def encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI's form: names in lower case, latin-1 bytes."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_body(
    send: Send,
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    head: bool = False,
) -> None:
    """One whole response: `content-length` added (no body for 204, 1xx or a HEAD request)."""
    raw = list(headers)
    if status == 204 or status < 200:
        body = b""
    else:
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        if head:
            body = b""
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
    """`body` as a JSON response straight to `send`."""
    raw = encode_headers(headers or {})
    raw.append((b"content-type", JSON.encode()))
    await send_body(send, status, raw, orjson.dumps(body, default=str))
