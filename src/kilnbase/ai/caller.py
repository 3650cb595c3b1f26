"""Who is calling the gateway, as far as the policy, the limits, the response cache and the ledger care."""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.ai.limits import Subject
from kilnbase.identity.principal import CredentialKind, Principal


@dataclass(frozen=True)
class Caller:
    principal: str
    user_id: str | None = None
    key_id: str | None = None
    key_models: tuple[str, ...] | None = None
    key_max_tokens: int | None = None
    #: The anon key or an anon-role token: anyone holding the app's public key. No model access unless the
    #: policy grants it, and then limits of its own, counted per client address.
    anonymous: bool = False
    client_address: str | None = None
    #: An agent key's id: its model budget applies (`agent/<id>` limits).
    agent_id: str | None = None

    @property
    def subject(self) -> Subject:
        anon_address = (self.client_address or "unknown") if self.anonymous else None
        return Subject(
            key_id=self.key_id, user_id=self.user_id, anon_address=anon_address, agent_id=self.agent_id
        )

    @property
    def cache_owner(self) -> str:
        """Whose cache entries these are: an answer is only ever replayed to the caller it was made for."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.agent_id is not None:
            return f"agent:{self.agent_id}"
        if self.anonymous:
            return f"anon:{self.client_address or 'unknown'}"
        return f"principal:{self.principal}"


def caller_of_principal(principal: Principal, client_address: str | None) -> Caller:
    """The caller a credential the rest of the API accepts stands for (the API key, the anon key, a user's
    token, an agent key), for the HTTP surfaces and for other capabilities' calls (`model_calls`)."""
    if principal.db_role == "anon":
        return Caller(principal=principal.actor, anonymous=True, client_address=client_address)
    if principal.agent is not None:
        return Caller(principal=principal.actor, agent_id=principal.agent.id)
    if principal.kind is CredentialKind.EXTERNAL_JWT:
        # An external provider's user is an end user too (`user/*` caps it), named by provider and subject
        # (`jwt:<provider>:<sub>`), which no Kilnbase user id (a UUID) nor another provider's user can equal.
        return Caller(principal=principal.actor, user_id=principal.actor)
    user_id = principal.user_id if principal.kind is CredentialKind.JWT else None
    return Caller(principal=principal.actor, user_id=user_id)
