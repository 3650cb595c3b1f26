"""An error's advice in the words of the surface that reads it: a tool, not a route, for an agent on `/mcp`.

The services word their errors' `nextActions` for the HTTP API ("List the tables with GET
/api/database/tables."), since one error serves every surface. An agent on `/mcp` would have to leave
for REST to follow that advice, or guess which tool does the same; so, where a tool does the route's
work, `for_tools` names the tool instead ("List the tables with the list-tables tool."). One table, read
at the MCP edge, keeps the services' wording single.
"""

from __future__ import annotations

import re

#: Routes whose work a tool does, as `METHOD /path` with each path parameter written `*`, and the tool in
#: the words that follow "the" in the advice.
ROUTE_TOOLS = {
    "GET /api/database/tables": "list-tables tool",
    "POST /api/database/tables": "create-table tool",
    "GET /api/database/tables/*/schema": "get-table-schema tool",
    "PATCH /api/database/tables/*/schema": "update-table-schema tool",
    "GET /api/database/schemas": "list-database-objects tool (kind schemas)",
    "GET /api/database/migrations": "list-migrations tool",
    "POST /api/database/migrations": "apply-migration tool",
    "GET /api/metadata": "get-backend-metadata tool",
    "GET /api/metadata/database": "get-backend-metadata tool",
    "GET /api/metadata/*": "describe-table tool",
    "GET /api/auth/users": "list-users tool",
    "GET /api/auth/config": "get-auth-config tool",
    "PUT /api/auth/config": "update-auth-config tool",
    "GET /api/storage/buckets": "list-buckets tool",
    "POST /api/storage/buckets": "create-bucket tool",
    "GET /api/storage/buckets/*/objects": "list-objects tool",
    "POST /api/storage/buckets/*/objects": "upload-object tool",
    "PUT /api/storage/buckets/*/objects/*": "upload-object tool",
    "GET /api/functions": "list-functions tool",
    "PUT /api/functions/*": "update-function tool",
    "GET /api/realtime/channels": "list-channels tool",
    "GET /api/secrets": "list-secrets tool",
    "POST /api/secrets": "create-secret tool",
    "GET /api/ai/models": "list-models tool",
    "PATCH /api/ai/configurations/*": "update-ai-configuration tool",
    "PUT /api/ai/limits/*/*": "put-ai-limits tool",
    "GET /api/logs/*": "get-container-logs tool",
    "GET /api/approvals": "list-change-requests tool",
    "GET /api/approvals/*": "get-change-request tool",
}

#: `GET /api/...` in prose: the method, then the path up to a space, a quote, a bracket or a comma.
_ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/api/[^\s,;)`'\"]*)")
#: A path parameter: `:table`, `{slug}`, `<bucket>`.
_PARAMETER = re.compile(r"^(:.+|\{.+\}|<.+>)$")


def _key(method: str, path: str) -> str:
    segments = path.split("?", 1)[0].rstrip("/").split("/")
    return f"{method} " + "/".join("*" if _PARAMETER.match(s) else s for s in segments)


def _named(found: re.Match[str]) -> str:
    path = found.group(2)
    trail = path[len(path.rstrip(".:")) :]  # the sentence's own full stop or colon stays
    tool = ROUTE_TOOLS.get(_key(found.group(1), path.rstrip(".:")))
    return f"the {tool}{trail}" if tool else found.group(0)


def for_tools(advice: str) -> str:
    """`advice` with each route a tool stands for replaced by that tool; other routes stay as written."""
    return _ROUTE.sub(_named, advice)
