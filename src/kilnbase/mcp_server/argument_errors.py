"""A tool call whose arguments do not fit the tool's input schema, refused in the API's words.

Left to the SDK, such a call comes back as pydantic's own report ("1 validation error for
list_usersArguments ... For further information visit https://errors.pydantic.dev/..."): written for a
Python programmer, naming a model the agent never saw. Here it is refused before it runs, as every other
refusal is (`{error: INVALID_INPUT, message, statusCode: 400, nextActions}`): the message says which
argument was wrong and how, `nextActions` what each wrong argument takes, read from the schema the tool
publishes in `tools/list`.

The SDK validates a call inside `Tool.run`, where a refusal of ours could not replace its text, so
`ArgumentCheck` validates with the tool's own metadata (the same model, the same text-keeping pre-parse)
from the access middleware, as `unknown_arguments` refuses misnamed ones there.
"""

from __future__ import annotations

import inspect
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError, create_model
from pydantic_core import ErrorDetails

from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError

if TYPE_CHECKING:  # (the SDK is imported once the MCP server is built: `mcp_server.endpoint`)
    from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata

#: How much of a wrong value the message repeats.
_SHOWN_INPUT_CHARS = 60


class ArgumentCheck:
    """The argument models of a server's tools, to refuse a call's arguments before the tool runs."""

    def __init__(self) -> None:
        self.metadata: dict[str, FuncMetadata] = {}

    def learn(self, metadata: Mapping[str, FuncMetadata]) -> None:
        """The tools' models by name, as `keep_text_arguments` installed them (so that text is checked as
        the call will read it); the server is built after this check, which its middleware holds."""
        self.metadata.update(metadata)

    def refusal(self, tool: str, arguments: Any) -> ApiError | None:
        """Why `arguments` do not fit `tool`, or hold a number JSON cannot carry once validated (None: they
        fit, or the tool is not known here)."""
        metadata = self.metadata.get(tool)
        if metadata is None or not isinstance(arguments, Mapping | None):
            return None
        try:
            values = metadata.validate_arguments(dict(arguments or {}))
        except ValidationError as exc:
            return invalid_arguments(tool, exc.errors(), metadata.arg_model.model_json_schema())
        return unsendable_numbers(tool, values)


def arguments_model(tool: Tool) -> type[BaseModel]:
    """The model of a tool's arguments, read from its `run` without the actor, as the SDK reads it: for a
    request that is held as the tool's call without passing through the MCP server (`rest_gate.py`)."""
    parameters = list(inspect.signature(tool.run, eval_str=True).parameters.values())[1:]
    fields: dict[str, Any] = {
        p.name: (p.annotation, ... if p.default is inspect.Parameter.empty else p.default) for p in parameters
    }
    return create_model(f"{tool.name.replace('-', '_')}_arguments", **fields)


def arguments_refusal(tool: str, model: type[BaseModel], arguments: Any, subject: str) -> ApiError | None:
    """Why `arguments` do not fit `model` (None: they do), worded about `subject` (what was sent)."""
    try:
        model.model_validate(arguments)
    except ValidationError as exc:
        return invalid_arguments(tool, exc.errors(), model.model_json_schema(), subject)
    return None


def invalid_arguments(
    tool: str, errors: Sequence[ErrorDetails], schema: Mapping[str, Any], subject: str | None = None
) -> ApiError:
    """One 400 for every problem pydantic found: `argument: what is wrong (got value)`, then what each
    argument named takes (`limit as an integer from 1 to 100`). `subject` names what was sent, when it was
    not a call of the tool itself."""
    problems = [_problem(error) for error in errors]
    properties = schema.get("properties", {})
    named = dict.fromkeys(str(error["loc"][0]) for error in errors if error["loc"])
    takes = [f"{name} as {describe(properties[name])}" for name in named if name in properties]
    return ApiError(
        400,
        "INVALID_INPUT",
        f"{subject or f'{tool} was called with'} invalid arguments: {'; '.join(problems)}. Nothing was done.",
        f"Call it again with {'; '.join(takes) or 'the arguments its input schema lists'}.",
    )


def _problem(error: ErrorDetails) -> str:
    path = _path(error["loc"]) or "arguments"
    if error["type"] == "missing":
        return f"{path} is required"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message} (got {_shown(error['input'])})"


def _path(loc: Sequence[int | str]) -> str:
    """`("columns", 0, "type")` as `columns[0].type`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:  # what JSON cannot hold (an integer past 64 bits, nesting past 255): a bounded repr
        text = reprlib.repr(value)
    return text if len(text) <= _SHOWN_INPUT_CHARS else text[:_SHOWN_INPUT_CHARS] + "…"


def describe(prop: Mapping[str, Any]) -> str:
    """A JSON schema property in words: `an integer from 1 to 100`, `one of "code", "link"`, `a string of
    1 to 63 characters (Table name in the public schema)`; null, when allowed, goes without saying (the
    argument may be left out)."""
    options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
    words = " or ".join(_one(option) for option in options) or "a value"
    description = prop.get("description")
    return f"{words} ({description})" if description else words


_ARTICLES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}


def _one(prop: Mapping[str, Any]) -> str:
    if "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        return "one of " + ", ".join(orjson.dumps(value).decode() for value in values)
    kind = prop.get("type")
    words = _ARTICLES.get(kind, "an object") if isinstance(kind, str) else "a value"
    items = prop.get("items")
    if kind == "array" and isinstance(items, Mapping) and items.get("type") in _ARTICLES:
        words = f"a list of {items['type']}s"
    bounds = _bounds(prop)
    return f"{words} {bounds}" if bounds else words


def _bounds(prop: Mapping[str, Any]) -> str:
    for low, high, unit in (
        ("minimum", "maximum", ""),
        ("minLength", "maxLength", " characters"),
        ("minItems", "maxItems", " items"),
    ):
        if low in prop and high in prop:
            return f"of {prop[low]} to {prop[high]}{unit}" if unit else f"from {prop[low]} to {prop[high]}"
        if low in prop:
            return f"of at least {prop[low]}{unit}" if unit else f"at least {prop[low]}"
        if high in prop:
            return f"of at most {prop[high]}{unit}" if unit else f"at most {prop[high]}"
    if "exclusiveMinimum" in prop:
        return f"greater than {prop['exclusiveMinimum']}"
    return ""


def nul_characters(tool: str, arguments: Any) -> ApiError | None:
    """The refusal of arguments holding a NUL character (None: none does). PostgreSQL text and jsonb cannot
    store one, so such a call could neither run nor be audited: left to run, its audit entry failed after
    the tool's own error, and the agent read only the SDK's bare "Error executing tool". A JSON string holds
    NUL only as `\\u0000`, which no argument of text needs; binary data goes base64-encoded."""
    if not isinstance(arguments, Mapping):
        return None
    named = [str(name) for name, value in arguments.items() if _holds_nul(name) or _holds_nul(value)]
    if not named:
        return None
    return ApiError(
        400,
        "INVALID_INPUT",
        f"{tool} was called with a NUL character (\\u0000) in {', '.join(named)}, which the database cannot "
        "store. Nothing was done.",
        "Remove the NUL characters; send binary content base64-encoded (upload-object's base64Data).",
    )


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


#: The integers JSON carries here (what `orjson`, which writes the audit entry and every stored JSON value,
#: can write): a signed or an unsigned 64-bit one.
_SMALLEST_INTEGER, _LARGEST_INTEGER = -(2**63), 2**64 - 1


def unsendable_numbers(tool: str, values: Mapping[str, Any]) -> ApiError | None:
    """The refusal of validated arguments holding a number that cannot be written back as JSON (None: none
    does): an integer past 64 bits (as sent, or as a numeric string an integer argument read) or a float
    that is not finite (`1e400`, `NaN`, which the SDK's parser reads as infinity or NaN). Left to run, such
    a call failed where its value was first written as JSON (a KV value, a function's body, the audit
    entry), after the tool may have acted, and the agent read only the SDK's bare "Error executing tool";
    an infinity stored as a JSON value became null."""
    named = [str(name) for name, value in values.items() if _unsendable(value)]
    if not named:
        return None
    return ApiError(
        400,
        "INVALID_INPUT",
        f"{tool} was called with a number JSON cannot carry in {', '.join(named)}: integers must fit in 64 "
        f"bits ({_SMALLEST_INTEGER} to {_LARGEST_INTEGER}) and numbers must be finite. Nothing was done.",
        "Send a number in that range (a larger one as a string, where the argument takes text).",
    )


def _unsendable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not _SMALLEST_INTEGER <= value <= _LARGEST_INTEGER
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_unsendable(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_unsendable(item) for item in value)
    return False
