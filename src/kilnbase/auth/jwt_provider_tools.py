"""MCP tools over the external JWT providers: the same `JwtProviders` calls as `/api/auth/jwt-providers`
(admin, audited by the service). Agent keys reach the read tools with `auth:read`; the service refuses an
agent's create, update or delete whatever its scopes (a provider mints identities), so those tools serve a
person's MCP client (the API key, `kilnbase mcp`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.auth.jwt_providers import JwtProviders
from kilnbase.capability import Tool, given_fields
from kilnbase.identity.actor import Actor

ProviderKey = Annotated[
    str,
    Field(description="The provider's key (lowercase letters, digits, - and _)", min_length=1, max_length=64),
]
Mappings = Annotated[
    dict[str, str] | None,
    Field(
        description="Request claim -> dot path into the provider's token; sub and email required "
        '(default {"sub": "sub", "email": "email"}); further names land in auth.jwt() for RLS'
    ),
]
Role = Annotated[
    Literal["anon", "authenticated", "project_admin"] | None,
    Field(description="The database role its users act as (default authenticated; project_admin: audited)"),
]
SubjectType = Annotated[
    Literal["text", "uuid"] | None,
    Field(description="uuid: refuse tokens whose subject is not a UUID; text (default): any subject"),
]
_FIELDS = (
    "name",
    "provider_key",
    "issuer",
    "audience",
    "jwks_url",
    "claim_mappings",
    "default_role",
    "subject_type",
    "is_enabled",
)


def jwt_provider_tools(providers: JwtProviders) -> list[Tool]:
    async def list_jwt_providers(actor: Actor) -> dict[str, Any]:
        return {"providers": await providers.list(actor)}

    async def get_jwt_provider(actor: Actor, provider_key: ProviderKey) -> dict[str, Any]:
        return await providers.get(actor, provider_key)

    async def create_jwt_provider(
        actor: Actor,
        name: Annotated[str, Field(min_length=1, max_length=255)],
        provider_key: ProviderKey,
        issuer: Annotated[str, Field(description="The iss its tokens carry", min_length=1, max_length=2048)],
        jwks_url: Annotated[str, Field(description="https URL of its JWKS", max_length=2048)],
        audience: Annotated[
            str | None, Field(description="The aud its tokens must carry", max_length=2048)
        ] = None,
        claim_mappings: Mappings = None,
        default_role: Role = None,
        subject_type: SubjectType = None,
        is_enabled: bool | None = None,
    ) -> dict[str, Any]:
        return await providers.create(actor, given_fields(locals(), _FIELDS))

    async def update_jwt_provider(
        actor: Actor,
        provider_key: ProviderKey,
        name: Annotated[str | None, Field(min_length=1, max_length=255)] = None,
        issuer: Annotated[str | None, Field(min_length=1, max_length=2048)] = None,
        jwks_url: Annotated[str | None, Field(max_length=2048)] = None,
        audience: Annotated[str | None, Field(max_length=2048)] = None,
        claim_mappings: Mappings = None,
        default_role: Role = None,
        subject_type: SubjectType = None,
        is_enabled: Annotated[
            bool | None, Field(description="false: refuse its tokens; true: accept")
        ] = None,
    ) -> dict[str, Any]:
        change = given_fields(locals(), _FIELDS)
        change.pop("provider_key", None)
        return await providers.update(actor, provider_key, change)

    async def delete_jwt_provider(actor: Actor, provider_key: ProviderKey) -> dict[str, Any]:
        await providers.delete(actor, provider_key)
        return {"message": "JWT provider deleted successfully"}

    return [
        Tool(
            "list-jwt-providers",
            "The external identity providers (Clerk, Auth0, OIDC, ...) whose tokens the project accepts.",
            list_jwt_providers,
        ),
        Tool("get-jwt-provider", "One external JWT provider by its provider_key.", get_jwt_provider),
        Tool(
            "create-jwt-provider",
            "Accept an external identity provider's tokens, verified by its JWKS (not for agent keys).",
            create_jwt_provider,
            read_only=False,
        ),
        Tool(
            "update-jwt-provider",
            "Change an external JWT provider, or switch it off and on (not for agent keys).",
            update_jwt_provider,
            read_only=False,
        ),
        Tool(
            "delete-jwt-provider",
            "Delete an external JWT provider: its tokens are refused at once (not for agent keys).",
            delete_jwt_provider,
            read_only=False,
        ),
    ]
