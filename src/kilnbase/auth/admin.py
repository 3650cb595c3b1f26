"""The auth admin service: the project's auth config, users, SMTP, email templates, OAuth provider configs,
the anon key, and the root admin's own sessions, for any caller (HTTP routes now, MCP tools and the CLI
later).

Every method takes the `Actor` and checks it is an admin. Each change runs in one transaction with its audit
entry, so both commit or neither does; a refused change (a bad provider, a missing config) is recorded on its
own with outcome "refused". The root admin's sign-in is recorded too, refused attempts included (a wrong
password, not a rate-limited one: those are counted, not written).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import Field

from kilnbase import audit
from kilnbase.auth import auth_config, email_templates, oauth_configs, smtp_settings, users
from kilnbase.auth.accounts import SessionResult, user_id_of, user_not_found
from kilnbase.auth.oauth_providers import KNOWN_PROVIDERS
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.root_admin import admin_subject, admin_user_json, credentials_match
from kilnbase.auth.validation import StrictBody
from kilnbase.http.errors import ApiError, require_admin_actor
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

MODULE = "AUTH"


class AdminSignIn(StrictBody):
    email: str | None = Field(None, max_length=256)
    username: str | None = Field(None, max_length=256)
    password: str = Field(max_length=1024)


def _provider(provider: str) -> str:
    if provider not in KNOWN_PROVIDERS:
        hint = f"Use one of {', '.join(KNOWN_PROVIDERS)}."
        raise ApiError(400, "INVALID_INPUT", "Invalid provider name", hint)
    return provider


def _config_not_found(provider: str) -> ApiError:
    return ApiError(
        404,
        "AUTH_OAUTH_CONFIG_NOT_FOUND",
        f"OAuth configuration for {provider} not found",
        f"Create it with POST /api/auth/oauth/configs (provider {provider}); "
        "GET /api/auth/oauth/configs lists the configured ones.",
    )


def _found(row: DictRow | None, provider: str) -> DictRow:
    if row is None:
        raise _config_not_found(provider)
    return row


def _changed_fields(change: auth_config.AuthConfigUpdate) -> dict[str, Any]:
    return {"updatedFields": sorted(change.model_dump(exclude_unset=True))}


async def _change_config(cur: AsyncCursor[DictRow], change: auth_config.AuthConfigUpdate) -> DictRow:
    """The change, refused while it would require verification no one could do (no SMTP server)."""
    if change.requireEmailVerification and not smtp_settings.is_usable(await smtp_settings.load(cur)):
        raise ApiError(
            400,
            "EMAIL_PROVIDER_NOT_CONFIGURED",
            "Email verification cannot be required while no SMTP server is configured: "
            "no new user could ever verify.",
            "Configure SMTP first. " + smtp_settings.CONFIGURE_SMTP,
        )
    return await auth_config.update(cur, change)


class AuthAdmin:
    def __init__(self, parts: AuthParts) -> None:
        self.parts = parts

    @contextlib.asynccontextmanager
    async def _audited(
        self, actor: Actor, action: str, details: dict[str, Any]
    ) -> AsyncIterator[AsyncCursor[DictRow]]:
        """A transaction whose change is recorded as `action` inside it (with what the block added to
        `details`); a refusal is recorded on its own."""
        async with audit.refusals(self.parts.database, actor, action, MODULE, details):
            require_admin_actor(actor)
            async with self.parts.database.as_owner() as cur:
                yield cur
                await audit.record(cur, actor, action, MODULE, details)

    # --- config --------------------------------------------------------------------------------------------

    async def public_config(self) -> dict[str, Any]:
        """What any client may read: the password policy, verification methods, sign-in providers."""
        async with self.parts.database.as_owner() as cur:
            row = await auth_config.load(cur)
            built_in, custom = await oauth_configs.enabled_providers(cur)
        return {
            "oAuthProviders": built_in,
            "customOAuthProviders": custom,
            **auth_config.public_config_json(row),
        }

    async def config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        return auth_config.config_json(await auth_config.read(self.parts.database))

    async def update_config(self, actor: Actor, change: auth_config.AuthConfigUpdate) -> dict[str, Any]:
        async with self._audited(actor, "UPDATE_AUTH_CONFIG", _changed_fields(change)) as cur:
            row = await _change_config(cur, change)
        return auth_config.config_json(row)

    # --- config, inside a caller's transaction (the declarative project config, `config/`) -----------------

    @property
    def access_token_seconds(self) -> int:
        """How long the access tokens signed here live (`KILNBASE_AUTH_ACCESS_TOKEN_SECONDS`)."""
        return self.parts.settings.access_token_seconds

    def check_config_change(self, change: Mapping[str, Any]) -> None:
        """Raise pydantic's `ValidationError` where `PUT /api/auth/config` would refuse `change` (InsForge's
        field names): the caller reports each problem in its own words, before anything changes."""
        auth_config.AuthConfigUpdate.model_validate(change)

    async def config_in(self, cur: AsyncCursor[DictRow]) -> dict[str, Any]:
        """The config as `GET /api/auth/config` answers it, read in the caller's transaction."""
        return auth_config.config_json(await auth_config.load(cur))

    async def update_config_in(
        self, cur: AsyncCursor[DictRow], actor: Actor, change: Mapping[str, Any]
    ) -> None:
        """`update_config` inside the caller's transaction, so that it commits or rolls back with the rest
        of the caller's changes; its audit entry goes in that transaction too. The caller records a refusal
        (the transaction that would hold this one's is rolled back)."""
        require_admin_actor(actor)
        parsed = auth_config.AuthConfigUpdate.model_validate(change)
        await _change_config(cur, parsed)
        await audit.record(cur, actor, "UPDATE_AUTH_CONFIG", MODULE, _changed_fields(parsed))

    # --- users ---------------------------------------------------------------------------------------------

    async def list_users(
        self, actor: Actor, *, limit: int, offset: int, search: str | None
    ) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            rows, total = await users.list_page(cur, limit=limit, offset=offset, search=search)
        return {
            "data": [users.user_json(r) for r in rows],
            "pagination": {"offset": offset, "limit": limit, "total": total},
        }

    async def user(self, actor: Actor, user_id: str) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            row = await users.by_id(cur, user_id_of(user_id))
        if row is None:
            raise user_not_found("List the users with GET /api/auth/users.", "User does not exist")
        return users.user_json(row)

    async def delete_users(self, actor: Actor, user_ids: list[str]) -> int:
        """Delete users; their sessions end with them (their access tokens stop working everywhere).
        Every id is checked here, not only by the route, so a tool's malformed id is a 400 too."""
        user_ids = [user_id_of(user_id) for user_id in user_ids]
        details: dict[str, Any] = {"userIds": user_ids}
        async with self._audited(actor, "DELETE_USERS", details) as cur:
            ended, deleted = await users.delete_many(cur, user_ids)
            details["deletedCount"] = deleted
        self.parts.sessions.ended(ended)
        return deleted

    # --- email ---------------------------------------------------------------------------------------------

    async def smtp_config(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            row = await smtp_settings.load(cur)
        return smtp_settings.smtp_json(row)

    async def update_smtp_config(
        self, actor: Actor, change: smtp_settings.SmtpConfigUpdate
    ) -> dict[str, Any]:
        details = change.model_dump(exclude={"password"})
        details["passwordChanged"] = change.password is not None
        async with self._audited(actor, "UPDATE_SMTP_CONFIG", details) as cur:
            if not change.enabled and (await auth_config.load(cur))["require_email_verification"]:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "SMTP cannot be disabled while email verification is required: "
                    "no new user could ever verify.",
                    "Turn requireEmailVerification off first (PUT /api/auth/config).",
                )
            row = await smtp_settings.upsert(cur, change, self.parts.box)
        return smtp_settings.smtp_json(row)

    async def templates(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            rows = await email_templates.list_all(cur)
        return [email_templates.template_json(r) for r in rows]

    async def update_template(
        self, actor: Actor, template_type: str, change: email_templates.TemplateUpdate
    ) -> dict[str, Any]:
        async with self._audited(actor, "UPDATE_EMAIL_TEMPLATE", {"templateType": template_type}) as cur:
            if template_type not in email_templates.TEMPLATE_TYPES:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    f"Invalid template type. Must be one of: {', '.join(email_templates.TEMPLATE_TYPES)}",
                    "Use one of those types in the path, PUT /api/auth/email-templates/{type}.",
                )
            row = await email_templates.update(cur, template_type, change)
            assert row is not None, "all template types are seeded"
        return email_templates.template_json(row)

    # --- OAuth providers -----------------------------------------------------------------------------------

    async def list_oauth_configs(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            rows = await oauth_configs.list_built_in(cur)
        return [oauth_configs.config_json(r) for r in rows]

    async def oauth_config(self, actor: Actor, provider: str) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            row = await oauth_configs.get_built_in(cur, _provider(provider))
        return oauth_configs.config_json(_found(row, provider))

    async def _change_config(
        self,
        actor: Actor,
        action: str,
        details: dict[str, Any],
        change: Callable[[AsyncCursor[DictRow]], Awaitable[DictRow | bool | None]],
        missing: ApiError | None = None,
    ) -> DictRow:
        """Run `change` (a write answering the row it wrote, or whether it deleted one) audited as `action`;
        `missing` when it found nothing to change."""
        async with self._audited(actor, action, details) as cur:
            row = await change(cur)
            if not row:
                raise missing or ApiError(
                    404,
                    "NOT_FOUND",
                    "Not found",
                    "List what is configured with GET /api/auth/oauth/configs or GET "
                    "/api/auth/oauth/custom/configs.",
                )
        return row if not isinstance(row, bool) else {}

    async def create_oauth_config(
        self, actor: Actor, body: oauth_configs.OAuthConfigCreate
    ) -> dict[str, Any]:
        row = await self._change_config(
            actor,
            "CREATE_OAUTH_CONFIG",
            {"provider": body.provider},
            lambda cur: oauth_configs.create_built_in(cur, body, self.parts.box),
        )
        return oauth_configs.config_json(row)

    async def update_oauth_config(
        self, actor: Actor, provider: str, body: oauth_configs.OAuthConfigFields
    ) -> dict[str, Any]:
        row = await self._change_config(
            actor,
            "UPDATE_OAUTH_CONFIG",
            {"provider": provider, "fields": sorted(body.model_fields_set)},
            lambda cur: oauth_configs.update_built_in(cur, _provider(provider), body, self.parts.box),
            _config_not_found(provider),
        )
        return oauth_configs.config_json(row)

    async def delete_oauth_config(self, actor: Actor, provider: str) -> None:
        await self._change_config(
            actor,
            "DELETE_OAUTH_CONFIG",
            {"provider": provider},
            lambda cur: oauth_configs.delete_built_in(cur, _provider(provider)),
            _config_not_found(provider),
        )

    async def list_custom_oauth_configs(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            rows = await oauth_configs.list_custom(cur)
        return [oauth_configs.custom_json(r) for r in rows]

    async def custom_oauth_config(self, actor: Actor, key: str) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self.parts.database.as_owner() as cur:
            row = await oauth_configs.get_custom(cur, key)
        if row is None:
            raise oauth_configs.custom_not_found(key)
        return oauth_configs.custom_json(row)

    async def create_custom_oauth_config(
        self, actor: Actor, body: oauth_configs.CustomConfigCreate
    ) -> dict[str, Any]:
        row = await self._change_config(
            actor,
            "CREATE_CUSTOM_OAUTH_CONFIG",
            {"key": body.key},
            lambda cur: oauth_configs.create_custom(cur, body, self.parts.box),
        )
        return oauth_configs.custom_json(row)

    async def update_custom_oauth_config(
        self, actor: Actor, key: str, body: oauth_configs.CustomConfigFields
    ) -> dict[str, Any]:
        row = await self._change_config(
            actor,
            "UPDATE_CUSTOM_OAUTH_CONFIG",
            {"key": key, "fields": sorted(body.model_fields_set)},
            lambda cur: oauth_configs.update_custom(cur, key, body, self.parts.box),
            oauth_configs.custom_not_found(key),
        )
        return oauth_configs.custom_json(row)

    async def delete_custom_oauth_config(self, actor: Actor, key: str) -> None:
        await self._change_config(
            actor,
            "DELETE_CUSTOM_OAUTH_CONFIG",
            {"key": key},
            lambda cur: oauth_configs.delete_custom(cur, key),
            oauth_configs.custom_not_found(key),
        )

    # --- keys ----------------------------------------------------------------------------------------------

    def anon_key(self, actor: Actor) -> str:
        """The anon key in force (InsForge's deprecated `POST /tokens/anon`, still called by its MCP)."""
        require_admin_actor(actor)
        return self.parts.keys.ring.current("anon_key")

    # --- the root admin ------------------------------------------------------------------------------------

    async def sign_in(self, actor: Actor, body: AdminSignIn, client_type: str) -> SessionResult:
        """The dashboard's root admin signs in (`ROOT_ADMIN_USERNAME`/`ROOT_ADMIN_PASSWORD`)."""
        name = body.username if body.username is not None else body.email
        if name is None:
            raise ApiError(400, "INVALID_INPUT", "username: Required", "Send username and password.")
        settings = self.parts.settings
        await self.parts.limit(f"admin-sign-in:{actor.ip}", settings.sign_in_limit)
        expected_name = self.parts.server.root_admin_username
        if not credentials_match(name, body.password, expected_name, self.parts.keys.root_admin_password):
            refused = {"error": "Invalid admin credentials"}
            await audit.record(
                self.parts.database, actor, "ADMIN_SIGN_IN", MODULE, refused, outcome="refused"
            )
            raise ApiError(
                401,
                "AUTH_UNAUTHORIZED",
                "Invalid admin credentials",
                "Check ROOT_ADMIN_USERNAME and the password (kilnbase keys shows where it is).",
            )
        who = admin_subject(expected_name)
        signed_in = Principal(
            db_role="project_admin",
            kind=CredentialKind.JWT,
            email=expected_name,
            claims={"role": "project_admin"},
        )
        async with self.parts.database.as_owner() as cur:
            tokens = await self.parts.sessions.issue(
                cur, who, client_type=client_type, ip=actor.ip, user_agent=actor.user_agent
            )
            as_admin = Actor(signed_in, ip=actor.ip, user_agent=actor.user_agent)
            await audit.record(cur, as_admin, "ADMIN_SIGN_IN", MODULE)
        return SessionResult(admin_user_json(who, self.parts.started_at), tokens)

    async def refresh(self, actor: Actor, refresh_token: str, client_type: str) -> SessionResult:
        """Rotate the root admin's refresh token."""
        sessions = self.parts.sessions
        rotation = await sessions.rotate(
            refresh_token, "admin", client_type=client_type, ip=actor.ip, user_agent=actor.user_agent
        )
        who = admin_subject(self.parts.server.root_admin_username)
        return SessionResult(admin_user_json(who, self.parts.started_at), sessions.tokens_for(who, rotation))

    def current(self, actor: Actor) -> dict[str, Any]:
        require_admin_actor(actor)
        principal = actor.principal
        return {"sub": principal.user_id or "api-key", "email": principal.email}
