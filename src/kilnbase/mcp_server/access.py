"""Which tools a caller sees and may call.

Four things narrow the catalogue, and none can widen it: the credential's role (tools that need an admin
are hidden from everyone else), its scopes (an agent key's `database:read`, `*:read`, `tool:run-raw-sql`;
`Principal.allows`), the project's read-only mode for agents, and what the connection asked for
(`read_only`, a list of feature groups), as Supabase's MCP server offers with `--read-only` and
`--features`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from kilnbase.capability import McpResource, Tool
from kilnbase.http.agent_scopes import exact_scope_refusal, read_only_refusal, scope_refusal
from kilnbase.http.errors import ApiError
from kilnbase.identity.principal import Access, Principal


@dataclass(frozen=True)
class Listed:
    """A tool with the feature group (capability) that offers it."""

    group: str
    tool: Tool

    @property
    def kind(self) -> Access:
        if self.tool.invokes:
            return "invoke"
        return "read" if self.tool.read_only else "write"


class UnknownFeatureGroups(ValueError):
    """`--features` (or `?features=`) named a group no capability offers, whose tools the connection would
    silently never see (Supabase's MCP server refuses an unknown feature too)."""


@dataclass(frozen=True)
class Narrowing:
    """What a connection asked to see: only read tools, and only some feature groups (None: all)."""

    read_only: bool = False
    groups: frozenset[str] | None = None

    @classmethod
    def parse(cls, read_only: bool, features: Iterable[str] | None) -> Narrowing:
        groups = frozenset(f.strip() for f in features if f.strip()) if features is not None else None
        return cls(read_only=read_only, groups=groups or None)

    def check_groups(self, known: Collection[str]) -> None:
        """Refuse a group that is not among `known`: `UnknownFeatureGroups`, naming the ones there are."""
        unknown = sorted((self.groups or frozenset()) - set(known))
        if unknown:
            raise UnknownFeatureGroups(
                f"no feature group is named {', '.join(unknown)}; the groups are {', '.join(sorted(known))}"
            )


#: Groups whose read tools every admin credential sees whatever its scopes: an agent can always read what
#: became of the change requests its calls turned into.
UNSCOPED_READS = frozenset({"approvals"})

#: No narrowing: everything the credential allows.
EVERYTHING = Narrowing()


def visible(principal: Principal, narrowing: Narrowing, listed: Listed) -> bool:
    """May this caller, on this connection, see (and so call) this tool?"""
    if listed.tool.needs_admin and not principal.is_admin:
        return False
    if narrowing.read_only and not listed.tool.read_only:
        return False
    if narrowing.groups is not None and listed.group not in narrowing.groups:
        return False
    if listed.tool.needs_scope is not None and not principal.has_scope(listed.tool.needs_scope):
        return False
    if listed.group in UNSCOPED_READS and listed.tool.read_only:
        return True
    if listed.tool.reached_by:
        return any(principal.allows(group, "read", listed.tool.name) for group in listed.tool.reached_by)
    return principal.allows(listed.group, listed.kind, listed.tool.name)


def hidden_reason(
    principal: Principal, narrowing: Narrowing, listed: Listed, read_only_mode: bool
) -> ApiError:
    """Why `visible` hides this tool from this caller, for a call of it by name: the same refusal an agent
    meets on REST (read-only mode, its key's scopes), or what the credential or connection lacks. Hidden
    from `tools/list` to keep an agent's context short, not as a secret: the catalogue is in the docs, and
    `Unknown tool` would send an agent looking for a tool that is there."""
    tool = listed.tool.name
    if listed.tool.needs_admin and not principal.is_admin:
        return ApiError(
            403,
            "FORBIDDEN",
            f"{tool} needs the project's admin API key or an agent key; this credential is "
            f"{principal.db_role}.",
            "Connect the MCP client with the admin API key (kilnbase keys prints it) or an agent key "
            "(POST /api/agents/keys).",
        )
    if narrowing.read_only and not listed.tool.read_only:
        if principal.agent is not None and read_only_mode:
            return read_only_refusal()
        return ApiError(
            403,
            "READ_ONLY_CONNECTION",
            f"This MCP connection is read-only (read_only=true) and {tool} changes the backend.",
            "Connect without read_only=true to use it.",
        )
    if narrowing.groups is not None and listed.group not in narrowing.groups:
        return ApiError(
            403,
            "FEATURE_NOT_CONNECTED",
            f"This MCP connection offers only {', '.join(sorted(narrowing.groups))}; {tool} is in "
            f"{listed.group}.",
            f"Connect with features including {listed.group} to use it.",
        )
    if listed.tool.needs_scope is not None and not principal.has_scope(listed.tool.needs_scope):
        return exact_scope_refusal(listed.tool.needs_scope, tool)
    return scope_refusal(listed.group, listed.kind, tool)


def agent_refusal(principal: Principal, listed: Listed, read_only_mode: bool) -> ApiError | None:
    """Why an agent may not make this tool call now (None: it may): the project's read-only mode, or its
    key's scopes (an exact scope the tool needs among them), as `visible` decides on `/mcp`. Asked where an
    agent's call is about to be held for approval on REST (so that a request the agent could never make
    does not become a change request a person might approve) and again when an approved call runs, with
    the key as it is then (its scopes may have been narrowed, or read-only mode turned on, while the
    request waited)."""
    if read_only_mode and not listed.tool.read_only:
        return read_only_refusal()
    if listed.tool.needs_scope is not None and not principal.has_scope(listed.tool.needs_scope):
        return exact_scope_refusal(listed.tool.needs_scope, listed.tool.name)
    if not visible(principal, EVERYTHING, listed):
        return scope_refusal(listed.group, listed.kind, listed.tool.name)
    return None


@dataclass(frozen=True)
class ListedResource:
    """An MCP resource with the feature group (capability) that offers it, and whether agent keys reach it
    only through that group's scopes."""

    group: str
    resource: McpResource
    agent_scoped: bool = True


def resource_visible(principal: Principal, narrowing: Narrowing, listed: ListedResource) -> bool:
    """May this caller, on this connection, list (and so read) this resource? As for a read tool."""
    if listed.resource.needs_admin and not principal.is_admin:
        return False
    if narrowing.groups is not None and listed.group not in narrowing.groups:
        return False
    return not listed.agent_scoped or principal.allows(listed.group, "read")


def session_of(principal: Principal, named: str | bytes | None) -> str:
    """The session a call belongs to: the one the client names, else its agent token's, else its
    credential's."""
    if isinstance(named, bytes):
        named = named.decode("latin-1")
    return (named or "")[:100] or str(principal.claims.get("agent_session") or principal.credential_id)
