"""Agent keys on the REST API: a key reaches only the feature groups its scopes name, and no agent changes
anything while the project is in read-only mode.

Each capability's routes are wrapped with the capability's name as their feature group; a request is a
read when its method is GET, HEAD or OPTIONS, or its route only reads whatever the method (a capability's
`reads`: a query sent in a POST body), and a write otherwise. Routes that run the project's own code
(a capability's `invocations`: functions' `/functions/:slug`) are invocations instead, whatever the method:
what a function does with a POST is the function's business, not a write of Kilnbase's, so they need
`<group>:invoke` (which a write scope grants too), apart from the right to change the functions themselves.
A read scope still reaches an invocation by GET or HEAD, as it did before `functions:invoke` existed, so a
key keeps exactly the reach it was given. Read-only mode is about change, not scopes: it refuses an agent's
every request by another method, invocations included (a function may change what it likes).

Every other credential passes with one attribute check, so this costs the ordinary request nothing
measurable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import agent_in, principal_in
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import Access, Principal

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only_refusal() -> ApiError:
    """An agent's change refused in read-only mode: by the routes' guard here, and for a held or approved tool
    call (`mcp_server.access.agent_refusal`)."""
    return ApiError(
        403,
        "AGENT_READ_ONLY",
        "The project is in read-only mode for agents: no agent key may change anything.",
        "Ask an admin to turn read-only mode off (PUT /api/agents/settings).",
    )


def scope_refusal(group: str, wanted: Access, tool: str | None = None) -> ApiError:
    """An agent's request (or, naming `tool`, its tool call) that its key's scopes do not reach."""
    reach = f"{group}:{wanted}" + (f" ({tool})" if tool else "")
    return ApiError(
        403,
        "FORBIDDEN",
        f"This agent key's scopes do not reach {reach}.",
        f"Ask an admin for a key with {group}:{wanted} (POST /api/agents/keys).",
    )


def exact_scope_refusal(scope: str, tool: str) -> ApiError:
    """An agent's call of `tool`, which needs `scope` by name (no wildcard grants it), by a key without it."""
    return ApiError(
        403,
        "FORBIDDEN",
        f"This agent key's scopes do not reach {scope} ({tool}).",
        f"Ask an admin for a key with {scope} (POST /api/agents/keys).",
    )


class AgentScopeGuard:
    def __init__(
        self,
        app: ASGIApp,
        group: str,
        agent_keys: AgentKeys,
        *,
        invocation: bool = False,
        reads_only: bool = False,
    ) -> None:
        self.app = app
        self.group = group
        self.agent_keys = agent_keys
        #: The route runs the project's own code: `<group>:invoke`, whatever the method.
        self.invocation = invocation
        #: The route changes nothing, whatever the method: `<group>:read`.
        self.reads_only = reads_only

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Not a coroutine: the check needs no `await`, and the route's app is handed on as it is, so the
        guard is not one more frame that every resumption of the request's task passes through. (A refusal
        raises here, where the caller awaits the result: to it, the same as raising from a coroutine.)"""
        if scope["type"] == "http" and agent_in(scope) is not None:
            principal = principal_in(scope)
            safe = self.reads_only or scope["method"] in _READS
            if not safe and self.agent_keys.read_only:
                raise read_only_refusal()
            wanted: Access = "invoke" if self.invocation else "read" if safe else "write"
            if not self._allows(principal, wanted, safe):
                raise scope_refusal(self.group, wanted)
        return self.app(scope, receive, send)

    def _allows(self, principal: Principal, wanted: Access, safe: bool) -> bool:
        if principal.allows(self.group, wanted):
            return True
        return self.invocation and safe and principal.allows(self.group, "read")


def guard_routes(
    routes: Sequence[BaseRoute],
    group: str,
    agent_keys: AgentKeys,
    invocations: str | None = None,
    reads: Sequence[str] = (),
    public: Sequence[str] = (),
) -> None:
    """Wrap each route's app in place (the router keeps matching them as before); routes whose path starts
    with `invocations` are guarded as invocations, those whose path is one of `reads` as reads, and those
    whose path is one of `public` not at all."""
    for route in routes:
        if isinstance(route, Route | Mount) and route.path not in public:
            invocation = invocations is not None and route.path.startswith(invocations)
            reads_only = route.path in reads
            route.app = AgentScopeGuard(
                route.app, group, agent_keys, invocation=invocation, reads_only=reads_only
            )
