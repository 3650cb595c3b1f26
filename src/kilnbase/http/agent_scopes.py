"""Agent keys on the REST API: a key reaches only the feature groups its scopes name, and no agent writes
while the project is in read-only mode.

Each capability's routes are wrapped with the capability's name as their feature group; a request is a
read when its method is GET, HEAD or OPTIONS and a write otherwise (a POST to a read-only function is a
write too: the method is what the edge can know before the request runs). Every other credential passes
with one attribute check, so this costs the ordinary request nothing measurable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import agent_in, principal_in
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import Access

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AgentScopeGuard:
    def __init__(self, app: ASGIApp, group: str, agent_keys: AgentKeys) -> None:
        self.app = app
        self.group = group
        self.agent_keys = agent_keys

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine: the check needs no `await`, and the route's app is handed on as it is, so the
        guard is not one more frame that every resumption of the request's task passes through. (A refusal
        raises here, where the caller awaits the result: to it, the same as raising from a coroutine.)"""
        if scope["type"] == "http" and agent_in(scope) is not None:
            principal = principal_in(scope)
            kind: Access = "read" if scope["method"] in _READS else "write"
            if kind == "write" and self.agent_keys.read_only:
                raise ApiError(
                    403,
                    "AGENT_READ_ONLY",
                    "The project is in read-only mode for agents: no agent key may change anything.",
                    "Ask an admin to turn read-only mode off (PUT /api/agents/settings).",
                )
            if not principal.allows(self.group, kind):
                raise ApiError(
                    403,
                    "FORBIDDEN",
                    f"This agent key's scopes do not reach {self.group}:{kind}.",
                    "Ask an admin for a key with that scope (POST /api/agents/keys).",
                )
        return self.app(scope, receive, send)


def guard_routes(routes: Sequence[BaseRoute], group: str, agent_keys: AgentKeys) -> None:
    """Wrap each route's app in place (the router keeps matching them as before)."""
    for route in routes:
        if isinstance(route, Route | Mount):
            route.app = AgentScopeGuard(route.app, group, agent_keys)
