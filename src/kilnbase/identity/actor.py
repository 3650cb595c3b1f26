"""Who performs an action, as every service takes it: the caller's principal and where the call came from.

Services take an `Actor`, not a request: an HTTP route, an MCP tool and a CLI command build one each and call
the same service method, which checks what the principal may do and writes the audit entry itself. So no
path into a service can skip the audit or the role rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.identity.principal import CredentialKind, Principal


@dataclass(frozen=True)
class Actor:
    principal: Principal
    #: The client's address as the edge determined it (trusted proxies honoured), when it is an IP address.
    ip: str | None = None
    user_agent: str | None = None
    #: The MCP tool that made the call, for calls through the MCP server.
    tool: str | None = None
    #: The change request whose approval this call runs: an agent's held call, run once a person approved
    #: it. A service that lets an agent do something only with approval asks here.
    approved_request: str | None = None

    @property
    def name(self) -> str:
        """How the audit log names this actor."""
        return self.principal.actor

    @property
    def agent_key(self) -> str | None:
        """The id of the agent key the call was made with, for calls by agents."""
        return self.principal.agent.id if self.principal.agent is not None else None

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    @property
    def is_unapproved_agent(self) -> bool:
        """An agent key acting on its own: not a person, and not a held call a person approved."""
        return self.principal.agent is not None and self.approved_request is None


#: Kilnbase itself (the CLI, startup work): admin rights, named "system" in the audit log.
SYSTEM_PRINCIPAL = Principal(
    db_role="project_admin", kind=CredentialKind.SYSTEM, claims={"role": "project_admin"}
)
SYSTEM = Actor(SYSTEM_PRINCIPAL)
