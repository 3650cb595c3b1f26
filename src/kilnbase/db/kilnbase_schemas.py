"""The schemas Kilnbase's migrations create and own, named once.

Two checks read this list and must never disagree: the records API never exposes these schemas (nor names
them in a hint: `schema_cache.HIDDEN_SCHEMAS`), and an agent's SQL that deletes or changes their rows waits
for a person (`whole_table_changes.OWN_SCHEMAS`, `custom_migrations.agent_risks`). A schema a new migration
creates goes here; `tests/records/test_exposed_schemas.py` fails until it does.
"""

from __future__ import annotations

OWNED_SCHEMAS = (
    "system",
    "auth",
    "ai",
    "functions",
    "storage",
    "realtime",
    "schedules",
    "database_webhooks",
    "memory",
    "kv",
    "messaging",
    "payments",
)
