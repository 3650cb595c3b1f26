"""What a tool call returns to the agent and what its audit entry keeps of the arguments.

A result is JSON text, bounded: an agent's context is small and one `select *` must not fill it. A list
(or a `rows`/`data` list inside an object) is cut to what fits, with a note saying how many rows were left
out and how to page. Arguments are kept in the audit log with secret-looking values masked and long strings
cut (past 20,000 characters), so the log shows what the agent did, whole enough to replay it
(`replay.py`), without becoming a copy of its credentials.
"""

from __future__ import annotations

from typing import Any

import orjson

#: The largest result a tool returns, in characters of JSON (about 12,000 tokens).
MAX_RESULT_CHARS = 48_000
_ROW_KEYS = ("rows", "data", "records")
#: Names whose values are masked. Beside the words of secret fields, those of request headers that carry a
#: credential, however its value is spelt (`Authorization: Bearer ...`, `Cookie`, `X-Api-Key`), as a
#: schedule's or a function call's `headers` name them.
_SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "authorization",
    "cookie",
    "credential",
)
#: Arguments are kept whole for replay, up to this length (longer ones are cut, and cannot be replayed).
_MAX_ARGUMENT_CHARS = 20_000
MASKED = "***"
_CUT_MARK = "… ("


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _fit(rows: list[Any], budget: int) -> int:
    """How many leading rows fit in `budget` characters (at least none, at most all)."""
    used = 2
    for count, row in enumerate(rows):
        used += len(_dumps(row)) + 1
        if used > budget:
            return count
    return len(rows)


def bounded_text(result: Any, limit: int = MAX_RESULT_CHARS) -> str:
    text = _dumps(result)
    if len(text) <= limit:
        return text
    if isinstance(result, list):
        kept = _fit(result, limit - 200)
        return _dumps(
            {
                "rows": result[:kept],
                "truncated": f"{len(result) - kept} of {len(result)} rows left out to fit the result limit; "
                "ask for fewer rows (limit/offset, or a narrower query).",
            }
        )
    if isinstance(result, dict):
        for key in _ROW_KEYS:
            rows = result.get(key)
            if isinstance(rows, list):
                rest = {k: v for k, v in result.items() if k != key}
                kept = _fit(rows, limit - 200 - len(_dumps(rest)))
                return _dumps(
                    rest
                    | {
                        key: rows[:kept],
                        "truncated": f"{len(rows) - kept} of {len(rows)} {key} left out to fit the result "
                        "limit; ask for fewer (limit/offset, or a narrower query).",
                    }
                )
    note = f"the result ({len(text)} characters) is over the limit of {limit}"
    return _dumps({"truncated": note, "start": text[:limit]})


def _masked(name: str, value: Any) -> Any:
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_WORDS) and value not in (None, ""):
        return MASKED
    if isinstance(value, str) and len(value) > _MAX_ARGUMENT_CHARS:
        return value[:_MAX_ARGUMENT_CHARS] + f"{_CUT_MARK}{len(value)} characters)"
    if isinstance(value, dict):
        return {str(k): _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(name, v) for v in value]
    return value


def masked_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    return {name: _masked(name, value) for name, value in arguments.items()}


def is_cut(value: str) -> bool:
    return len(value) > _MAX_ARGUMENT_CHARS and _CUT_MARK in value[_MAX_ARGUMENT_CHARS:]


def summary(text: str, limit: int = 200) -> str:
    """The start of a result, for the audit log: enough to see what came back, not a copy of it."""
    return text if len(text) <= limit else text[:limit] + f"{_CUT_MARK}{len(text)} characters)"
