"""The auth capability's MCP tools: the users and settings an agent needs to read, change or clean up,
through `AuthAdmin` (admin only, audited by the service)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kilnbase.auth.auth_config import AuthConfigUpdate
from kilnbase.auth.services import Auth
from kilnbase.auth.validation import parse_body
from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor

Switch = Annotated[bool | None, Field(description="Leave out to keep the current setting")]
Method = Annotated[
    Literal["code", "link"] | None,
    Field(description="code: a 6-digit code the user types; link: a link they open"),
]

UPDATE_AUTH_CONFIG = (
    "Change auth settings, as PUT /api/auth/config: send only what changes, the rest is kept. "
    "requireEmailVerification (needs SMTP configured, else refused), passwordMinLength (4-128), "
    "requireNumber/Lowercase/Uppercase/SpecialChar, verifyEmailMethod and resetPasswordMethod (code|link), "
    "allowedRedirectUrls (replaces the list; https://app.example.com/*, *.example.com hosts, app schemes), "
    "disableSignup. Returns the whole config, as get-auth-config."
)


def config_change(given: dict[str, Any]) -> AuthConfigUpdate:
    """The settings a call gives, checked by the model `PUT /api/auth/config` reads its body with (so a
    refusal says what the route would say); a call that gives none is refused rather than reported done."""
    change = {name: value for name, value in given.items() if value is not None}
    if not change:
        raise ApiError(
            400,
            "INVALID_INPUT",
            "update-auth-config names no setting; nothing was changed.",
            f"Send at least one of {', '.join(AuthConfigUpdate.model_fields)}; get-auth-config shows the "
            "current values.",
        )
    return parse_body(AuthConfigUpdate, change)


def auth_tools(auth: Auth) -> list[Tool]:
    admin = auth.admin

    async def list_users(
        actor: Actor,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        offset: Annotated[int, Field(ge=0, le=100_000_000)] = 0,
        search: Annotated[str | None, Field(description="Part of an email or a name", max_length=200)] = None,
    ) -> dict[str, Any]:
        return await admin.list_users(actor, limit=limit, offset=offset, search=search)

    async def get_user(actor: Actor, userId: str) -> dict[str, Any]:
        return await admin.user(actor, userId)

    async def delete_users(
        actor: Actor, userIds: Annotated[list[str], Field(min_length=1, max_length=100)]
    ) -> dict[str, Any]:
        return {"deletedCount": await admin.delete_users(actor, userIds)}

    async def get_auth_config(actor: Actor) -> dict[str, Any]:
        return await admin.config(actor)

    async def update_auth_config(
        actor: Actor,
        requireEmailVerification: Switch = None,
        passwordMinLength: Annotated[int | None, Field(ge=4, le=128)] = None,
        requireNumber: Switch = None,
        requireLowercase: Switch = None,
        requireUppercase: Switch = None,
        requireSpecialChar: Switch = None,
        verifyEmailMethod: Method = None,
        resetPasswordMethod: Method = None,
        allowedRedirectUrls: Annotated[
            list[str] | None, Field(description="The whole allow-list (it replaces the current one)")
        ] = None,
        disableSignup: Switch = None,
    ) -> dict[str, Any]:
        change = config_change(
            {
                "requireEmailVerification": requireEmailVerification,
                "passwordMinLength": passwordMinLength,
                "requireNumber": requireNumber,
                "requireLowercase": requireLowercase,
                "requireUppercase": requireUppercase,
                "requireSpecialChar": requireSpecialChar,
                "verifyEmailMethod": verifyEmailMethod,
                "resetPasswordMethod": resetPasswordMethod,
                "allowedRedirectUrls": allowedRedirectUrls,
                "disableSignup": disableSignup,
            }
        )
        return await admin.update_config(actor, change)

    return [
        Tool("list-users", "List users (id, email, verified, providers), newest first.", list_users),
        Tool("get-user", "One user by id.", get_user),
        Tool(
            "delete-users",
            "Delete users; their sessions end at once.",
            delete_users,
            read_only=False,
            needs_approval=lambda arguments: (
                f"deletes {len(arguments.get('userIds') or [])} user(s) and their data"
            ),
        ),
        Tool(
            "get-auth-config",
            "Auth settings that change client code: verification, password rules, redirects.",
            get_auth_config,
        ),
        Tool("update-auth-config", UPDATE_AUTH_CONFIG, update_auth_config, read_only=False),
    ]
