"""OAuth provider configurations: built-in providers (`auth.oauth_configs`) and custom OpenID Connect
providers by discovery URL (`auth.custom_oauth_configs`). Client secrets are encrypted with the project's
SecretBox and never returned."""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncCursor, errors
from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilnbase.auth.auth_config import iso
from kilnbase.auth.oauth_providers import KNOWN_PROVIDERS
from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import SecretBox

CUSTOM_KEY = re.compile(r"^[a-z0-9_-]{1,64}$")


def _secret_context(kind: str, name: str) -> str:
    return f"auth.oauth.{kind}.{name}.client_secret"


def _no_shared_keys(value: bool | None) -> bool | None:
    if value:
        raise ValueError("shared OAuth keys are an InsForge Cloud feature; configure your own client")
    return value


def _url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http(s) URL")
    return value


def custom_not_found(key: str) -> ApiError:
    return ApiError(
        404,
        "AUTH_OAUTH_CONFIG_NOT_FOUND",
        f"Custom OAuth configuration for {key} not found",
        "List the custom providers with GET /api/auth/oauth/custom/configs, or create this one with "
        "POST /api/auth/oauth/custom/configs.",
    )


class OAuthConfigFields(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    clientId: str | None = Field(None, min_length=1, max_length=512)
    clientSecret: str | None = Field(None, min_length=1, max_length=8192)
    scopes: list[str] | None = Field(None, max_length=50)
    redirectUri: str | None = Field(None, max_length=2048)
    useSharedKey: bool | None = None
    nativeClientIds: list[str] | None = Field(None, max_length=50)

    _shared = field_validator("useSharedKey")(_no_shared_keys)
    _redirect = field_validator("redirectUri")(_url)


class OAuthConfigCreate(OAuthConfigFields):
    provider: str

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value not in KNOWN_PROVIDERS:
            expected = " | ".join(f"'{name}'" for name in KNOWN_PROVIDERS)
            raise ValueError(f"Invalid enum value. Expected {expected}, received '{value}'")
        return value


class CustomConfigFields(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    discoveryEndpoint: str | None = Field(None, max_length=2048)
    clientId: str | None = Field(None, min_length=1, max_length=512)
    clientSecret: str | None = Field(None, min_length=1, max_length=8192)

    _discovery = field_validator("discoveryEndpoint")(_url)


class CustomConfigCreate(CustomConfigFields):
    key: str
    name: str = Field(min_length=1, max_length=200)
    discoveryEndpoint: str = Field(max_length=2048)
    clientId: str = Field(min_length=1, max_length=512)
    clientSecret: str = Field(min_length=1, max_length=8192)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not CUSTOM_KEY.match(value):
            raise ValueError("Key must contain only lowercase letters, numbers, hyphens, and underscores")
        return value


def config_json(row: DictRow) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "provider": row["provider"],
        "clientId": row["client_id"],
        "scopes": row["scopes"],
        "redirectUri": row["redirect_uri"],
        "useSharedKey": row["use_shared_key"],
        "nativeClientIds": row["native_client_ids"],
        "hasClientSecret": row["client_secret_ciphertext"] is not None,
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


def custom_json(row: DictRow) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "key": row["key"],
        "name": row["name"],
        "discoveryEndpoint": row["discovery_endpoint"],
        "clientId": row["client_id"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


async def enabled_providers(cur: AsyncCursor[DictRow]) -> tuple[list[str], list[str]]:
    """(built-in providers with a client id, custom OIDC keys): what `/public-config` offers."""
    await cur.execute("select provider from auth.oauth_configs where client_id is not null order by provider")
    built_in = [r["provider"] for r in await cur.fetchall()]
    await cur.execute("select key from auth.custom_oauth_configs order by key")
    custom = [r["key"] for r in await cur.fetchall()]
    return built_in, custom


async def list_built_in(cur: AsyncCursor[DictRow]) -> list[DictRow]:
    await cur.execute("select * from auth.oauth_configs order by provider")
    return await cur.fetchall()


async def get_built_in(cur: AsyncCursor[DictRow], provider: str) -> DictRow | None:
    await cur.execute("select * from auth.oauth_configs where provider = %s", (provider,))
    return await cur.fetchone()


async def create_built_in(cur: AsyncCursor[DictRow], body: OAuthConfigCreate, box: SecretBox) -> DictRow:
    secret = (
        box.encrypt(body.clientSecret, context=_secret_context("builtin", body.provider))
        if body.clientSecret
        else None
    )
    try:
        await cur.execute(
            "insert into auth.oauth_configs (provider, client_id, client_secret_ciphertext, scopes, "
            "redirect_uri, "
            "use_shared_key, native_client_ids) values (%s, %s, %s, %s, %s, false, %s) returning *",
            (body.provider, body.clientId, secret, body.scopes, body.redirectUri, body.nativeClientIds or []),
        )
    except errors.UniqueViolation:
        raise ApiError(
            409,
            "AUTH_OAUTH_CONFIG_ALREADY_EXISTS",
            f"OAuth configuration for {body.provider} already exists",
            f"Update it with PUT /api/auth/oauth/{body.provider}/config.",
        ) from None
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_built_in(
    cur: AsyncCursor[DictRow], provider: str, body: OAuthConfigFields, box: SecretBox
) -> DictRow | None:
    fields = body.model_dump(exclude_unset=True)
    columns = {
        "clientId": "client_id",
        "scopes": "scopes",
        "redirectUri": "redirect_uri",
        "nativeClientIds": "native_client_ids",
    }
    assignments, params = ["updated_at = now()"], []
    for name, column in columns.items():
        if name in fields:
            assignments.append(f"{column} = %s")
            params.append(fields[name] if name != "nativeClientIds" else fields[name] or [])
    if fields.get("clientSecret"):
        assignments.append("client_secret_ciphertext = %s")
        params.append(box.encrypt(fields["clientSecret"], context=_secret_context("builtin", provider)))
    await cur.execute(
        f"update auth.oauth_configs set {', '.join(assignments)} where provider = %s returning *",
        [*params, provider],
    )
    return await cur.fetchone()


async def delete_built_in(cur: AsyncCursor[DictRow], provider: str) -> bool:
    await cur.execute("delete from auth.oauth_configs where provider = %s", (provider,))
    return cur.rowcount > 0


def built_in_secret(row: DictRow, box: SecretBox) -> str | None:
    if row["client_secret_ciphertext"] is None:
        return None
    return box.decrypt(row["client_secret_ciphertext"], context=_secret_context("builtin", row["provider"]))


async def list_custom(cur: AsyncCursor[DictRow]) -> list[DictRow]:
    await cur.execute("select * from auth.custom_oauth_configs order by key")
    return await cur.fetchall()


async def get_custom(cur: AsyncCursor[DictRow], key: str) -> DictRow | None:
    await cur.execute("select * from auth.custom_oauth_configs where key = %s", (key,))
    return await cur.fetchone()


async def create_custom(cur: AsyncCursor[DictRow], body: CustomConfigCreate, box: SecretBox) -> DictRow:
    try:
        await cur.execute(
            "insert into auth.custom_oauth_configs (key, name, discovery_endpoint, client_id, "
            "client_secret_ciphertext) values (%s, %s, %s, %s, %s) returning *",
            (
                body.key,
                body.name,
                body.discoveryEndpoint,
                body.clientId,
                box.encrypt(body.clientSecret, context=_secret_context("custom", body.key)),
            ),
        )
    except errors.UniqueViolation:
        raise ApiError(
            409,
            "AUTH_OAUTH_CONFIG_ALREADY_EXISTS",
            f"Custom OAuth config {body.key} already exists",
            f"Update it with PUT /api/auth/oauth/custom/{body.key}/config.",
        ) from None
    row = await cur.fetchone()
    assert row is not None
    return row


async def update_custom(
    cur: AsyncCursor[DictRow], key: str, body: CustomConfigFields, box: SecretBox
) -> DictRow | None:
    fields = body.model_dump(exclude_unset=True)
    columns = {"name": "name", "discoveryEndpoint": "discovery_endpoint", "clientId": "client_id"}
    assignments, params = ["updated_at = now()"], []
    for name, column in columns.items():
        if fields.get(name) is not None:
            assignments.append(f"{column} = %s")
            params.append(fields[name])
    if fields.get("clientSecret"):
        assignments.append("client_secret_ciphertext = %s")
        params.append(box.encrypt(fields["clientSecret"], context=_secret_context("custom", key)))
    await cur.execute(
        f"update auth.custom_oauth_configs set {', '.join(assignments)} where key = %s returning *",
        [*params, key],
    )
    return await cur.fetchone()


async def delete_custom(cur: AsyncCursor[DictRow], key: str) -> bool:
    await cur.execute("delete from auth.custom_oauth_configs where key = %s", (key,))
    return cur.rowcount > 0


def custom_secret(row: DictRow, box: SecretBox) -> str:
    return box.decrypt(row["client_secret_ciphertext"], context=_secret_context("custom", row["key"]))
