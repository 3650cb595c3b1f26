"""Query-string values checked at the edge: a bad one is a 400 that names the parameter and its range."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from kilnbase.http.errors import ApiError


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"'{name}' must be an integer from {low} to {high}.",
            f"Send {name} in that range, or leave it out for {default}.",
        )
    return value


def timestamp_param(request: Request, name: str) -> str | None:
    """An ISO 8601 date or timestamp, passed on as given (Postgres parses it); None when absent."""
    return checked_timestamp(name, request.query_params.get(name))


def checked_timestamp(name: str, raw: str | None) -> str | None:
    """`raw` when it is an ISO 8601 date or timestamp (None stays None); else the 400 naming `name`.
    Checked here, not left to Postgres, which reads words such as `yesterday` or `epoch` as times: a
    route's query parameter and a tool's argument must not mean something the caller did not write."""
    if raw is None:
        return None
    try:
        datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"'{name}' must be an ISO 8601 date or timestamp.",
            f"Send {name} like 2026-04-18 or 2026-04-18T09:15:00Z, or leave it out.",
        ) from None
    return raw
