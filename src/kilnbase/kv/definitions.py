"""What `/api/kv` takes: InsForge's fields and limits (`shared-schemas/kv-api.schema.ts`), checked before
anything reaches the database, so a mistake is a 400 `INVALID_INPUT` ("Validation error: ..." for a body,
"Invalid namespace: ..." or "Invalid key: ..." for the path), never a 500.

A namespace (at most 256 characters) and a key (at most 512) are each one URL path segment: no '/' (':' is
the conventional separator inside a key), and no NUL, which Postgres's text cannot hold. A value is any JSON
of at most 256 KiB serialized (413 `KV_VALUE_TOO_LARGE` past it). A TTL is whole seconds, 1 to ten years;
null never expires; omitted, a new entry expires in 30 days (InsForge's default).

As InsForge's zod objects do, fields a model does not know are ignored (the official clients may send more
than this version reads); types are strict (a string is never taken for a number or a boolean)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse

M = TypeVar("M", bound=BaseModel)
Visibility = Literal["private", "authed", "public"]

MAX_NAMESPACE = 256
MAX_KEY = 512
MAX_VALUE_BYTES = 256 * 1024
#: InsForge's default expiry for a new entry whose TTL is not given, and its longest TTL.
DEFAULT_TTL_SECONDS = 60 * 60 * 24 * 30
MAX_TTL_SECONDS = 60 * 60 * 24 * 365 * 10
#: Keys one mget reads (InsForge's cap) and, in Kilnbase (InsForge has none), entries one mset writes.
MAX_BATCH = 100
#: Keys one listing answers (InsForge lists them all); `after` pages on.
MAX_LISTED = 1000
#: Incr and decr keep a counter within what a JSON number (a double) can hold.
MAX_NUMBER = 1e308

Ttl = Annotated[int, Field(ge=1, le=MAX_TTL_SECONDS)]
Namespace = Annotated[str, Field(min_length=1, max_length=MAX_NAMESPACE, pattern=r"^[^/\x00]+$")]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY, pattern=r"^[^/\x00]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class SetRequest(_Body):
    value: Any = None
    ttl: Ttl | None = None
    visibility: Visibility = "private"
    ifNotExists: bool = False


class IncrRequest(_Body):
    by: Annotated[int | float, Field(allow_inf_nan=False, ge=-MAX_NUMBER, le=MAX_NUMBER)] = 1
    #: Given (a number or null), it sets the entry's expiry; omitted, a new counter expires in 30 days and an
    #: existing one keeps its expiry. (InsForge's schema takes it and its service ignores it.)
    ttl: Ttl | None = None


class CasRequest(_Body):
    expected: Any = None
    next: Any = None
    #: Given, the swap also sets the expiry; omitted, the entry keeps its own.
    ttl: Ttl | None = None


class ExpireRequest(_Body):
    ttl: Ttl | None


class MgetRequest(_Body):
    namespace: Namespace = "default"
    keys: Annotated[list[Key], Field(min_length=1, max_length=MAX_BATCH)]


class MsetRequest(_Body):
    namespace: Namespace = "default"
    entries: Annotated[dict[Key, Any], Field(max_length=MAX_BATCH)]
    ttl: Ttl | None = None
    visibility: Visibility = "private"


def checked(model: type[M], body: Any) -> M:
    """The body as `model`, or InsForge's 400 "Validation error: ..." naming each field."""
    try:
        return parse(model, body)
    except ApiError as exc:
        raise ApiError(400, "INVALID_INPUT", f"Validation error: {exc.message}", exc.next_actions) from None


def expiry_given(request: BaseModel) -> bool:
    """Whether the body named `ttl` (null included): omitted means the default, or the entry's own."""
    return "ttl" in request.model_fields_set


def serialized(value: Any) -> str:
    """A value as the JSON text stored, or 413 past InsForge's cap (measured as it is, compact)."""
    text = orjson.dumps(value)
    if len(text) > MAX_VALUE_BYTES:
        raise ApiError(
            413,
            "KV_VALUE_TOO_LARGE",
            f"Value exceeds the {MAX_VALUE_BYTES}-byte limit",
            "Store large payloads in storage and keep their key here.",
        )
    return text.decode()


def path_part(label: Literal["namespace", "key"], value: str) -> str:
    """A namespace or a key from the path, or InsForge's 400 "Invalid namespace: ..." naming what is wrong."""
    name = label.capitalize()
    limit = MAX_NAMESPACE if label == "namespace" else MAX_KEY
    problem = None
    if not value:
        problem = f"{name} must not be empty"
    elif len(value) > limit:
        problem = f"{name} must be at most {limit} characters"
    elif "/" in value:
        problem = f'{name} must not contain "/"'
    elif "\x00" in value:
        problem = f"{name} must not contain the NUL character"
    if problem is not None:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Invalid {label}: {problem}",
            f"Use a {label} of 1 to {limit} characters, without '/' (percent-encode it in the URL).",
        )
    return value
