"""Request bodies and query strings parsed into typed models, with InsForge's 400 on anything malformed.

Models are strict (a JSON string is never coerced to a boolean or a number), so a client mistake is reported
instead of guessed at; the message lists every field that is wrong, as `field: reason`.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from kilnbase.http.errors import ApiError

M = TypeVar("M", bound=BaseModel)

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


async def read_json(request: Request, *, optional: bool = False) -> Any:
    body = await request.body()
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "INVALID_INPUT", "A JSON body is required.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "INVALID_INPUT", "The request body is not valid JSON.") from None


def parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_INPUT", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{field}: {error['msg']}")
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems)) from None


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise ValueError("Invalid email format")
    return email
