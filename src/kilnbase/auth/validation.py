"""What auth checks in its inputs beyond a model's types: email addresses, user ids, and text Postgres can
store (a NUL character cannot be stored in `text` or `jsonb`: it is refused here as a 400 rather than failing
in the database as a 500)."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import ErrorDetails
from starlette.requests import Request

from kilnbase.email.addresses import normalize_email
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS, SEND_OBJECT, decode_json, zod_type

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
M = TypeVar("M", bound=BaseModel)


def storable(value: Any) -> Any:
    """`value` (text, or JSON with text in it), refused when any string or key holds a NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    elif isinstance(value, list):
        for item in value:
            storable(item)
    return value


class StrictBody(BaseModel):
    """A request body: JSON types as they are (no coercion), unknown fields ignored (as InsForge does)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class WithEmail(StrictBody):
    email: str

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


# --- request bodies, refused in InsForge's words ---------------------------------------------------------
#
# InsForge validates bodies with zod (v3) and answers 400 INVALID_INPUT with its issues joined as
# `path: message, ...` ("email: Required, password: Required"). Clients and agents match on those, so auth's
# bodies are refused with zod's default wording, and with InsForge's own wording where its schemas set one
# (`FIELD_MESSAGES`, keyed by field and pydantic's error type).

FIELD_MESSAGES: dict[tuple[str, str], str] = {
    ("otp", "string_pattern_mismatch"): "OTP code must be a 6-digit numeric code",
    ("code", "string_pattern_mismatch"): "Reset password code must be a 6-digit numeric code",
    ("otp", "string_too_short"): "OTP/token is required",
    ("name", "string_too_short"): "Name is required",
    ("name", "string_too_long"): "Name must be less than 100 characters",
    ("userIds", "too_short"): "At least one user ID is required",
    ("refreshToken", "string_too_short"): "refreshToken is required",
    ("token", "string_too_short"): "Token is required",
    ("code", "string_too_short"): "Exchange code is required",
    ("subject", "string_too_short"): "Subject is required",
    ("bodyHtml", "string_too_short"): "Template body is required",
    ("provider", "string_pattern_mismatch"): "Invalid discriminator value. Expected 'google' | 'apple'",
    ("provider_key", "string_pattern_mismatch"): (
        "provider_key must be lowercase alphanumeric with hyphens/underscores"
    ),
}


_EXPECTED = {
    "string_type": "string",
    "bool_type": "boolean",
    "int_type": "number",
    "float_type": "number",
    "dict_type": "object",
    "model_type": "object",
    "list_type": "array",
}


def zod_message(error: ErrorDetails) -> str:
    """One pydantic error in zod v3's words."""
    kind = error["type"]
    field = next((str(part) for part in reversed(error["loc"]) if isinstance(part, str)), "")
    custom = FIELD_MESSAGES.get((field, kind))
    if custom is not None:
        return custom
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "Required"
    if kind in _EXPECTED:
        return f"Expected {_EXPECTED[kind]}, received {zod_type(error.get('input'))}"
    if kind == "string_too_short":
        return f"String must contain at least {ctx.get('min_length')} character(s)"
    if kind == "string_too_long":
        return f"String must contain at most {ctx.get('max_length')} character(s)"
    if kind == "too_short":
        return f"Array must contain at least {ctx.get('min_length')} element(s)"
    if kind == "too_long":
        return f"Array must contain at most {ctx.get('max_length')} element(s)"
    if kind == "greater_than_equal":
        return f"Number must be greater than or equal to {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"Number must be less than or equal to {ctx.get('le')}"
    if kind == "string_pattern_mismatch":
        return "Invalid"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", " | ").replace(", ", " | ")
        return f"Invalid enum value. Expected {expected}, received {error.get('input')!r}"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])


def parse_body(model: type[M], data: Any) -> M:
    """`data` (a JSON value) as `model`, or InsForge's 400 listing every problem as `path: message`."""
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_INPUT", f"Expected object, received {zod_type(data)}", SEND_OBJECT)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"])
            # (a check of the whole body names its fields itself)
            problems.append(f"{path}: {zod_message(error)}" if path else zod_message(error))
        raise ApiError(400, "INVALID_INPUT", ", ".join(problems), FIX_FIELDS) from None


async def read_body(request: Request, model: type[M]) -> M:
    """The request's body as `model`; an empty body is `{}` (as Express hands it to InsForge's routes), so
    that it is refused field by field."""
    return parse_body(model, decode_json(await request.body(), optional=True))
