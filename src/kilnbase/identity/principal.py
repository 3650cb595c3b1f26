"""Who is calling: every credential InsForge accepts, turned into a Principal.

Dispatch is by the credential's shape, as in InsForge's `verifyUser`: `ik_...` is the admin API key,
`anon_...` the anon key, anything else must be a valid JWT. A credential that is present but wrong fails
closed (401); it is never downgraded to anon. API and anon keys are checked against the project's key ring,
which holds the current keys and, after a rotation, the previous ones until their grace period ends. A user
or admin token whose session has ended (signed out, revoked, reset, deleted) fails closed too, within moments
of the change in any process (`EndedSessions`).

A token that is not signed by a project key may be an external JWT provider's (`ExternalTokens`): its caller
acts as the provider's default role in the database, but is never an admin of Kilnbase's API, whatever
that role (InsForge's `verifyAdmin` takes only its own tokens too). When the provider's keys must be fetched
first, `KeysToFetch` hands the request edge an awaitable that fetches them and resolves again, so the
synchronous path stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from kilnbase.identity.agent_keys import KEY_PATTERN, AgentKey, AgentKeys
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.identity.external_tokens import ExternalRefused, ExternalTokens, KeysNeeded, NotExternal
from kilnbase.keys.access_tokens import ForeignToken, InvalidToken, TokenService
from kilnbase.keys.project_keys import ProjectKeys


class CredentialKind(StrEnum):
    NONE = "none"
    API_KEY = "api_key"
    ANON_KEY = "anon_key"
    JWT = "jwt"
    #: A coding agent's key (`kba_...`), or an access token minted from one for an agent's session.
    AGENT_KEY = "agent_key"
    #: An access token an external JWT provider issued (`/api/auth/jwt-providers`).
    EXTERNAL_JWT = "external_jwt"
    #: Kilnbase itself acting (CLI commands, startup work), never a credential presented by a client.
    SYSTEM = "system"


JWT_ROLES = frozenset({"anon", "authenticated", "project_admin"})
#: What a request does in a feature group: reads, writes, or invokes (runs the project's own code: a
#: function, which decides for itself what a call does; the scopes model only what Kilnbase does).
Access = Literal["read", "write", "invoke"]


@dataclass(frozen=True)
class Principal:
    db_role: str
    kind: CredentialKind
    user_id: str | None = None
    email: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    #: What this credential may do; empty means everything its role allows (the API key, user tokens).
    #: Agent keys carry scopes, and a service refuses what their scopes leave out.
    scopes: frozenset[str] = frozenset()
    #: The agent key behind this credential, for agents.
    agent: AgentKey | None = None

    @property
    def is_admin(self) -> bool:
        """Admin rights over Kilnbase's API. An external provider's token never has them, even when the
        provider makes its users project_admin in the database."""
        return self.db_role == "project_admin" and self.kind is not CredentialKind.EXTERNAL_JWT

    def has_scope(self, scope: str) -> bool:
        """An exact scope (`database:owner-sql`): granted only by name, never by a wildcard."""
        return not self.scopes or scope in self.scopes

    def allows(self, group: str, kind: Access, tool: str | None = None) -> bool:
        """May this credential read, write or invoke in a feature group (a capability), or call this tool?
        Scopes: `<group>:read`, `<group>:write` (read and invoke too), `*:read`, `*:write`,
        `<group>:invoke` (only `functions:invoke` exists; a read scope never grants it, though the REST
        guard still lets one invoke by GET, as it always did: `http.agent_scopes`), `tool:<name>`."""
        if not self.scopes:
            return True
        wanted = {f"{group}:{kind}", f"{group}:write", "*:write"}
        if kind == "read":
            wanted.add("*:read")
        if tool is not None:
            wanted.add(f"tool:{tool}")
        return not wanted.isdisjoint(self.scopes)

    @property
    def credential_id(self) -> str:
        """Which credential this is, for things kept per credential (idempotency keys, MCP rate limits): its
        kind, and the user or agent key it stands for. An external provider's user by provider too: two
        providers may each have a user whose subject is `42`, and one must never be replayed the other's
        response."""
        agent = self.agent.id if self.agent is not None else ""
        if self.kind is CredentialKind.EXTERNAL_JWT:
            return f"{self.kind}:{self.claims.get('provider')}:{self.user_id or ''}:{agent}"
        return f"{self.kind}:{self.user_id or ''}:{agent}"

    @property
    def actor(self) -> str:
        """How the audit log (and the AI gateway's ledger and response cache) names this caller. An external
        provider's caller by provider and subject: its `email` is whatever the provider's token says, which
        may be `api-key`, the root admin's name or another provider's user's address."""
        if self.kind is CredentialKind.EXTERNAL_JWT:
            return f"jwt:{self.claims.get('provider')}:{self.user_id}"
        if self.kind is CredentialKind.API_KEY:
            return "api-key"
        if self.kind is CredentialKind.SYSTEM:
            return "system"
        if self.agent is not None:
            return f"agent:{self.agent.name}"
        return self.email or self.user_id or self.db_role


ANONYMOUS = Principal(db_role="anon", kind=CredentialKind.NONE, claims={"role": "anon"})
#: Whoever presents the project's API key.
API_KEY_HOLDER = Principal(
    db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"}
)


def agent_principal(key: AgentKey, session: str | None = None, expires_at: Any = None) -> Principal:
    """An agent acts as project_admin, narrowed by its key's scopes (and the project's read-only mode).
    `session` is the agent session of a token minted from the key (`agent_session`): it names the session
    in the audit, and tells a token from the key itself, which alone may mint tokens. `expires_at` is that
    token's `exp`, kept so that what outlives one request (a realtime connection) ends when the token does."""
    claims: dict[str, Any] = {"role": "project_admin", "agent_key": key.id}
    if session is not None:
        claims["agent_session"] = session
    if isinstance(expires_at, int | float):
        claims["exp"] = expires_at
    return Principal(
        db_role="project_admin",
        kind=CredentialKind.AGENT_KEY,
        claims=claims,
        scopes=key.scopes,
        agent=key,
    )


class CredentialError(Exception):
    """A credential was presented and is not valid."""


class KeysToFetch(CredentialError):
    """The credential is an external provider's token whose signing keys this process must fetch first:
    `await resolved()` fetches them and resolves again (the Principal, or CredentialError). Left unawaited,
    it is a refusal like any other."""

    def __init__(self, resolved: Callable[[], Awaitable[Principal]]) -> None:
        super().__init__("the signing keys of the token's provider are not fetched yet")
        self.resolved = resolved


class CredentialResolver:
    def __init__(
        self,
        keys: ProjectKeys,
        tokens: TokenService,
        ended_sessions: EndedSessions,
        agent_keys: AgentKeys,
        external: ExternalTokens,
    ) -> None:
        self._keys = keys
        self._tokens = tokens
        self._external = external
        self._ended_sessions = ended_sessions
        self._agent_keys = agent_keys
        self._admin = API_KEY_HOLDER
        self._anon = Principal(db_role="anon", kind=CredentialKind.ANON_KEY, claims={"role": "anon"})

    def resolve(self, authorization: str | None, api_key_header: str | None) -> Principal:
        credential = self._extract(authorization, api_key_header)
        if credential is None:
            return ANONYMOUS
        if credential.startswith("kba_"):
            return self._agent(credential)
        if credential.startswith(("ik_", "anon_")):
            ring = self._keys.ring
            ring.maybe_refresh()
            if credential.startswith("ik_"):
                if ring.accepts("api_key", credential):
                    return self._admin
                raise CredentialError("invalid API key")
            if ring.accepts("anon_key", credential):
                return self._anon
            raise CredentialError("invalid anon key")
        try:
            claims = self._tokens.verify(credential)
        except ForeignToken as exc:
            return self._external_principal(credential, authorization, api_key_header, exc)
        except InvalidToken as exc:
            raise CredentialError(str(exc)) from exc
        role = claims.get("role")
        if role not in JWT_ROLES:
            raise CredentialError("token role is not allowed")
        session_id = claims.get("sid")
        if isinstance(session_id, str) and self._ended_sessions.has_ended(session_id):
            raise CredentialError("the session of this token has been signed out")
        agent_key_id = claims.get("agent_key")
        if agent_key_id is not None:  # minted for an agent's session: only while its key lives
            key = self._agent_keys.by_id(str(agent_key_id))
            if key is None:
                raise CredentialError("the agent key of this token has been revoked or has expired")
            session = claims.get("agent_session")
            return agent_principal(key, str(session) if session is not None else "", claims.get("exp"))
        return Principal(
            db_role=role,
            kind=CredentialKind.JWT,
            user_id=claims.get("sub"),
            email=claims.get("email"),
            claims=claims,
        )

    def _external_principal(
        self, token: str, authorization: str | None, api_key_header: str | None, ours: ForeignToken
    ) -> Principal:
        """The caller of a token an enabled external provider issued; our own refusal when none claims it."""
        try:
            identity = self._external.verify(token)
        except NotExternal:
            raise CredentialError(str(ours)) from None
        except ExternalRefused as exc:
            raise CredentialError(str(exc)) from None
        except KeysNeeded as needed:
            url = needed.url

            async def resolved() -> Principal:
                await self._external.fetch(url)
                try:
                    return self.resolve(authorization, api_key_header)
                except KeysToFetch:  # (fetched once: a second ask is a provider that will not answer)
                    unavailable = "the signing keys of the token's provider could not be fetched"
                    raise CredentialError(unavailable) from None

            raise KeysToFetch(resolved) from None
        return Principal(
            db_role=identity.role,
            kind=CredentialKind.EXTERNAL_JWT,
            user_id=identity.user_id,
            email=identity.email,
            claims=identity.claims,
        )

    def withdrawn(self, principal: Principal) -> bool:
        """Whether an external provider's caller has lost its standing since it was resolved (the provider
        switched off, deleted, or given another role): for what outlives one request (a realtime socket)."""
        if principal.kind is not CredentialKind.EXTERNAL_JWT:
            return False
        return not self._external.still_accepts(principal.claims, principal.db_role)

    async def resolve_fetching(self, authorization: str | None, api_key_header: str | None) -> Principal:
        """`resolve`, fetching an external provider's keys when the token needs them: for callers that
        may wait (a realtime handshake, a tool process)."""
        try:
            return self.resolve(authorization, api_key_header)
        except KeysToFetch as pending:
            return await pending.resolved()

    def _agent(self, credential: str) -> Principal:
        key = self._agent_keys.find(credential) if KEY_PATTERN.fullmatch(credential) else None
        if key is None:
            raise CredentialError("invalid, revoked or expired agent key")
        return agent_principal(key)

    @staticmethod
    def _extract(authorization: str | None, api_key_header: str | None) -> str | None:
        if api_key_header:
            return api_key_header.strip()
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise CredentialError("the Authorization header must be 'Bearer <token>'")
        return value.strip()
