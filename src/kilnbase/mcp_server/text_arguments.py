"""Text arguments reach a tool as the agent sent them.

Before validating a call, the SDK (`FuncMetadata.pre_parse_json`) turns every string argument that is JSON
into the value it spells, unless the parameter is annotated exactly `str`: a help for clients that send
lists and objects as JSON text. For an optional text parameter (`str | None`) that turns the text an agent
means into something else: `upload-object {text: '{"a": 1}'}` became an object and failed validation, so
a JSON file could not be uploaded as text, and a text of `null` became no text at all. Here a parameter
that takes text keeps the string it was sent; the others keep the SDK's help.

The SDK gives no public hook for this, so `keep_text_arguments` swaps each registered tool's metadata for
a subclass (`MCPServer._tool_manager`, checked by `tests/mcp_server/test_agent_mistakes.py`).
"""

from __future__ import annotations

from typing import Any, get_args

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata


def _takes_text(annotation: Any) -> bool:
    return annotation is str or str in get_args(annotation)


class TextKeepingMetadata(FuncMetadata):
    """The SDK's metadata, with strings left alone for parameters that take text."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        parsed = super().pre_parse_json(data)
        fields = self.arg_model.model_fields
        return {
            name: data[name]
            if isinstance(data[name], str) and name in fields and _takes_text(fields[name].annotation)
            else value
            for name, value in parsed.items()
        }


def keep_text_arguments(server: MCPServer) -> dict[str, FuncMetadata]:
    """Give every tool registered on `server` the text-keeping metadata; returns it by tool name (what a
    call's arguments are checked against: `ArgumentCheck`)."""
    installed: dict[str, FuncMetadata] = {}
    for tool in server._tool_manager.list_tools():
        metadata = tool.fn_metadata
        tool.fn_metadata = installed[tool.name] = TextKeepingMetadata(
            arg_model=metadata.arg_model,
            output_schema=metadata.output_schema,
            output_model=metadata.output_model,
            wrap_output=metadata.wrap_output,
        )
    return installed
