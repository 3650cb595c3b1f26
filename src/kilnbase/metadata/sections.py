"""The sections of the metadata, and the one rule for who sees each: InsForge's (auth settings, the database's
tables, storage buckets, edge functions, realtime channels) and Kilnbase's (the model gateway's models, and
the summaries of schedules, database webhooks, database backups, the advisor, the KV store, agent memory,
the messaging outbox and Stripe payments).

Each section belongs to a feature group, and an agent key sees it only with that group's read scope
(`auth:read`, `database:read`, `storage:read`, ..., or `*:read`): what it could not list through the
capability's own API, it does not learn from the metadata either. `metadata:read` alone reaches the
metadata routes and tools, and shows no section. Every other credential (the API key, an admin session)
has no scopes and sees everything. The JSON, the markdown, the MCP tool and resources, and the slices
(`/api/metadata/<section>`) all ask `visible` or `require`, so no section can follow a rule of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.http.agent_scopes import scope_refusal
from kilnbase.identity.principal import Principal


@dataclass(frozen=True)
class Section:
    """One section: its key in the JSON, the feature group whose read scope shows it, and the table its
    capability creates when it is installed (None: a table every server has, or the caller's own schema)."""

    key: str
    group: str
    table: str | None = None


AUTH = Section("auth", "auth")
DATABASE = Section("database", "database")
STORAGE = Section("storage", "storage", "storage.buckets")
FUNCTIONS = Section("functions", "functions", "functions.definitions")
REALTIME = Section("realtime", "realtime", "realtime.channels")
AI = Section("ai", "ai")
SCHEDULES = Section("schedules", "schedules", "schedules.jobs")
WEBHOOKS = Section("databaseWebhooks", "webhooks", "database_webhooks.hooks")
BACKUPS = Section("databaseBackups", "database", "system.database_backups")
ADVISOR = Section("advisor", "advisor", "system.advisor_scans")
KV = Section("kv", "kv", "kv.entries")
MEMORY = Section("memory", "memory", "memory.memories")
MESSAGING = Section("messaging", "messaging", "messaging.outbox")
PAYMENTS = Section("payments", "payments", "payments.provider_connections")
#: Every section, in the order the JSON and the markdown give them.
SECTIONS = (
    AUTH,
    DATABASE,
    STORAGE,
    FUNCTIONS,
    REALTIME,
    AI,
    SCHEDULES,
    WEBHOOKS,
    BACKUPS,
    ADVISOR,
    KV,
    MEMORY,
    MESSAGING,
    PAYMENTS,
)


def visible(principal: Principal) -> tuple[Section, ...]:
    """The sections this caller may see: all of them, but for an agent key without the group's read scope."""
    return tuple(section for section in SECTIONS if principal.allows(section.group, "read"))


def require(principal: Principal, section: Section) -> None:
    """Refuse a request for one section (a slice, a table's schema) that this caller may not see."""
    if not principal.allows(section.group, "read"):
        raise scope_refusal(section.group, "read")
