"""The project's configuration as the other capabilities keep it, read on the owner pool (it lives in
Kilnbase's own schemas, which no request role can read): auth settings, storage buckets, edge functions,
realtime channels and permissions, the model gateway's configurations, and the summaries of schedules,
database webhooks, the advisor, the KV store and agent memory (`summaries`): only the sections the caller
may see (`sections.visible`), so a section hidden from it is never read.

Nothing here imports another capability: each is read from its tables. A capability that is not installed
in this server has no tables (`to_regclass(...)` is null), and its slice is empty, never an error. Secrets
never leave: the SMTP password and OAuth client secrets are reported only as present or absent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.metadata import summaries
from kilnbase.metadata.sections import AI, AUTH, FUNCTIONS, REALTIME, STORAGE, Section

#: The tables read here that a capability creates when it is installed.
_OPTIONAL_TABLES = (
    "storage.buckets",
    "functions.definitions",
    "realtime.channels",
    "realtime.messages",
    *summaries.TABLES,
)

_EXISTING = "select name from unnest(%s::text[]) as name where to_regclass(name) is not null"

_AUTH_CONFIG = """
select require_email_verification, password_min_length, require_number, require_lowercase, require_uppercase,
       require_special_char, verify_email_method, reset_password_method, allowed_redirect_urls, disable_signup
from auth.config limit 1
"""
_SMTP = """
select enabled, host, port, username, password_ciphertext is not null as has_password, sender_email,
       sender_name, min_interval_seconds
from auth.smtp_config limit 1
"""
_OAUTH = "select provider from auth.oauth_configs order by provider limit 100"
_CUSTOM_OAUTH = "select key from auth.custom_oauth_configs order by key limit 100"
_BUCKETS = "select name, public, created_at from storage.buckets order by name limit 1000"
_FUNCTIONS = """
select slug, name, description, status, created_at, updated_at from functions.definitions
order by slug limit 1000
"""
_CHANNELS = """
select pattern, description, enabled, webhook_urls from realtime.channels order by pattern limit 1000
"""
_REALTIME_POLICIES = """
select tablename as table, policyname as "policyName", cmd as "command", roles::text[] as roles,
       qual as "using", with_check as "withCheck"
from pg_policies where schemaname = 'realtime' and tablename in ('channels', 'messages')
  and policyname <> 'kilnbase_owner'
order by tablename, policyname
"""
_AI_CONFIGURATIONS = """
select model_id, provider, input_modality, output_modality from ai.configurations order by model_id limit 500
"""
_AI_POLICY = "select allowed_models from ai.policy limit 1"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


async def installed(cur: AsyncCursor[DictRow]) -> set[str]:
    """Which optional tables exist in this database."""
    await cur.execute(_EXISTING, (list(_OPTIONAL_TABLES),))
    return {row["name"] for row in await cur.fetchall()}


async def auth(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    """InsForge's admin auth metadata: OAuth providers, SMTP (without its password), and the settings."""
    await cur.execute(_AUTH_CONFIG)
    config = await cur.fetchone() or {}
    await cur.execute(_SMTP)
    smtp = await cur.fetchone() or {}
    await cur.execute(_OAUTH)
    providers = [row["provider"] for row in await cur.fetchall()]
    await cur.execute(_CUSTOM_OAUTH)
    custom = [row["key"] for row in await cur.fetchall()]
    return {
        "oAuthProviders": providers,
        "customOAuthProviders": custom,
        "smtpConfig": {
            "enabled": bool(smtp.get("enabled", False)),
            "host": smtp.get("host", ""),
            "port": smtp.get("port", 587),
            "username": smtp.get("username", ""),
            "hasPassword": bool(smtp.get("has_password", False)),
            "senderEmail": smtp.get("sender_email", ""),
            "senderName": smtp.get("sender_name", ""),
            "minIntervalSeconds": smtp.get("min_interval_seconds", 60),
        },
        "requireEmailVerification": config.get("require_email_verification", False),
        "passwordMinLength": config.get("password_min_length", 6),
        "requireNumber": config.get("require_number", False),
        "requireLowercase": config.get("require_lowercase", False),
        "requireUppercase": config.get("require_uppercase", False),
        "requireSpecialChar": config.get("require_special_char", False),
        "verifyEmailMethod": config.get("verify_email_method", "code"),
        "resetPasswordMethod": config.get("reset_password_method", "code"),
        "allowedRedirectUrls": list(config.get("allowed_redirect_urls") or []),
        "disableSignup": config.get("disable_signup", False),
    }


async def storage(cur: AsyncCursor[DictRow], tables: set[str]) -> dict[str, Any]:
    """Buckets (InsForge's `{buckets, totalSizeInGB}`); empty when storage is not installed."""
    if "storage.buckets" not in tables:
        return {"buckets": [], "totalSizeInGB": 0}
    await cur.execute(_BUCKETS)
    buckets = await cur.fetchall()
    return {
        "buckets": [
            {
                "name": row["name"],
                "public": bool(row["public"]),
                "createdAt": _iso(row["created_at"]),
            }
            for row in buckets
        ],
        "totalSizeInGB": 0,
    }


async def functions(cur: AsyncCursor[DictRow], tables: set[str]) -> list[dict[str, Any]]:
    """Edge functions (InsForge's `[{slug, name, description, status}]`); empty when not installed."""
    if "functions.definitions" not in tables:
        return []
    await cur.execute(_FUNCTIONS)
    return [
        {
            "slug": row["slug"],
            "name": row["name"],
            "description": row["description"],
            "status": row["status"],
            "createdAt": _iso(row["created_at"]),
            "updatedAt": _iso(row["updated_at"]),
        }
        for row in await cur.fetchall()
    ]


async def realtime(cur: AsyncCursor[DictRow], tables: set[str]) -> dict[str, Any]:
    """Channels and the policies that decide who subscribes (`realtime.channels`) and publishes
    (`realtime.messages`), as InsForge's realtime metadata."""
    channels: list[dict[str, Any]] = []
    if "realtime.channels" in tables:
        await cur.execute(_CHANNELS)
        channels = [
            {
                "pattern": row["pattern"],
                "description": row["description"],
                "enabled": bool(row["enabled"]),
                "webhookUrls": row["webhook_urls"],
            }
            for row in await cur.fetchall()
        ]
    await cur.execute(_REALTIME_POLICIES)
    policies = await cur.fetchall()

    def on(table: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "table"} for row in policies if row["table"] == table]

    return {
        "channels": channels,
        "permissions": {"subscribe": {"policies": on("channels")}, "publish": {"policies": on("messages")}},
    }


async def ai(cur: AsyncCursor[DictRow]) -> dict[str, Any]:
    """The model gateway's configured models and the project's allow-list (null: every model)."""
    await cur.execute(_AI_CONFIGURATIONS)
    configurations = [
        {
            "modelId": row["model_id"],
            "provider": row["provider"],
            "inputModality": list(row["input_modality"]),
            "outputModality": list(row["output_modality"]),
        }
        for row in await cur.fetchall()
    ]
    await cur.execute(_AI_POLICY)
    policy = await cur.fetchone()
    allowed = policy["allowed_models"] if policy else None
    return {"configurations": configurations, "allowedModels": None if allowed is None else list(allowed)}


#: How each of the sections above is read, given the optional tables this database has.
_READERS: dict[Section, Callable[[AsyncCursor[DictRow], set[str]], Awaitable[Any]]] = {
    AUTH: lambda cur, _tables: auth(cur),
    STORAGE: storage,
    FUNCTIONS: functions,
    REALTIME: realtime,
    AI: lambda cur, _tables: ai(cur),
}


@dataclass(frozen=True)
class ProjectState:
    """The sections asked for, read in one transaction."""

    installed: set[str]
    #: Each section asked for (those the caller may see) but the database's, by its key in the JSON.
    sections: dict[str, Any]


async def read(cur: AsyncCursor[DictRow], shown: tuple[Section, ...]) -> ProjectState:
    """The sections in `shown` kept here and in `summaries`; the rest are not read at all."""
    tables = await installed(cur)
    found = {section.key: await _READERS[section](cur, tables) for section in shown if section in _READERS}
    found.update(await summaries.read(cur, shown, tables))
    return ProjectState(installed=tables, sections=found)
