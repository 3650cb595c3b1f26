"""Request bodies parsed into typed models, with InsForge's 400 on anything malformed.

Models are strict (a JSON string is never coerced to a boolean or a number), so a client mistake is reported
instead of guessed at; the message lists every field that is wrong, as `field: reason`. The body's size was
bounded while it streamed in (`request_context`), before any of this runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from kilnbase.http.buffered_body import read_at_most
from kilnbase.http.errors import ApiError

M = TypeVar("M", bound=BaseModel)
#: For a body whose fields are wrong: the message lists them, as `field: reason`.
FIX_FIELDS = "Fix each field the message names (as field: reason) and send the request again."
#: For a body that is not a JSON object.
SEND_OBJECT = "Send the body as a JSON object, {...}, with Content-Type: application/json."
#: How deep a body's objects and arrays may nest. The parser takes 1,024 levels, but orjson writes at most
#: 254, and routes write what they read (an audit entry, a stored value, a measured size), often inside an
#: object of their own: a body nested past that could only fail later, as a 500. Half leaves the room.
MAX_NESTING = 128


def decode_json(raw: bytes, *, optional: bool = False) -> Any:
    """The JSON value of a body; `{}` for an empty optional one. A string holding NUL (`\\u0000`) is refused
    here, once for every route: Postgres's text cannot hold it, so it could only fail later, as a 500, after
    whatever the route did first (a model called and paid for)."""
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "INVALID_INPUT", "A JSON body is required.", SEND_OBJECT)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "The request body is not valid JSON.",
            "Send valid JSON (double-quoted names and strings, no trailing commas).",
        ) from None
    if b"\\u0000" in raw:  # (JSON writes NUL only so: the walk runs for the bodies that may hold one)
        where = nul_at(value)
        if where is not None:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"{where or 'The body'}: text cannot contain the NUL character (\\u0000).",
                "Remove the NUL characters from the text and send the request again.",
            )
    # (each level opens a bracket: the walk runs for the bodies that may nest that deep)
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and nests_past(value, MAX_NESTING):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"The request body nests JSON objects and arrays more than {MAX_NESTING} levels deep.",
            f"Send the data with at most {MAX_NESTING} levels of objects and arrays.",
        )
    return value


def nests_past(value: Any, limit: int) -> bool:
    """Whether `value` has objects and arrays nested more than `limit` deep (the value itself is level 1).
    A walk with a stack of its own, as `nul_at`."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if inner is None:
            continue
        if level > limit:
            return True
        pending.extend((each, level + 1) for each in inner)
    return False


def zod_type(value: Any) -> str:
    """The name zod (InsForge's validator) gives a JSON value's type, as in "Expected string, received
    number": InsForge's messages for a field of the wrong type are worded with it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "undefined"


def nul_at(value: Any) -> str | None:
    """The path (`a.b.0`) of the first name or string in `value` holding NUL, if any. A walk with a stack of
    its own: a body may nest as deep as the JSON parser allows (1,024 levels), past Python's recursion."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            named = [(f"{path}.{name}" if path else str(name), name, inner) for name, inner in item.items()]
            for here, name, _ in named:
                if "\x00" in name:
                    return here
            pending.extend((inner, here) for here, _, inner in reversed(named))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                pending.append((item[index], f"{path}.{index}" if path else str(index)))
    return None


def _not_an_object() -> ApiError:
    return ApiError(400, "INVALID_INPUT", "The request body must be a JSON object.", SEND_OBJECT)


async def read_json(request: Request, *, optional: bool = False) -> Any:
    return decode_json(await request.body(), optional=optional)


async def body_at_most(request: Request, limit: int, too_large: Callable[[], ApiError]) -> bytes:
    """The body, for a route whose own limit is far below its surface's: refused with `too_large()` when its
    Content-Length says it is larger than `limit` bytes, or as soon as what has streamed in passes it, so
    the route never holds more than `limit` (the surface's limit alone would let it read megabytes only to
    refuse them)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # (`isdigit` alone takes "²")
        raise too_large()
    body = await read_at_most(request.receive, limit)
    if body is None:
        raise too_large()
    return body


async def read_object(request: Request, *, optional: bool = True) -> dict[str, Any]:
    """A body that must be a JSON object (an empty one when `optional` and absent)."""
    data = await read_json(request, optional=optional)
    if not isinstance(data, dict):
        raise _not_an_object()
    return data


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise _not_an_object()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{field}: {error['msg']}")
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS) from None


async def read_model(request: Request, model: type[M]) -> M:
    """The body, parsed into `model`."""
    return parse(model, await read_json(request))
