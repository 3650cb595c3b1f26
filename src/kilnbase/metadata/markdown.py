"""The backend described for a coding agent: what it needs to write correct client code, and nothing else.

Per table: its columns in one line (type, `?` when nullable, `=default`, `->` a foreign key), RLS state and
each policy's command, roles and expressions, and what `anon` may do; then the auth settings that change
client code, buckets, functions, realtime channels and the models the gateway serves; then schedules,
database webhooks, the advisor's latest scan, the KV store's global namespaces and memory's scopes. Each
section is written only for a caller whose scopes reach it (`sections.visible`); the rest are named at the
end. A project with more
tables than `FULL_DETAIL_TABLES` gets one line per table and the advice to ask for one table's schema (MCP
`get-table-schema`, `GET /api/metadata/<table>`), so it stays readable at any size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import DictRow

from kilnbase.metadata.sections import (
    ADVISOR,
    AI,
    AUTH,
    BACKUPS,
    DATABASE,
    FUNCTIONS,
    KV,
    MEMORY,
    MESSAGING,
    PAYMENTS,
    REALTIME,
    SCHEDULES,
    SECTIONS,
    STORAGE,
    WEBHOOKS,
    Section,
)
from kilnbase.metadata.tables import ForeignKeyEdge

#: Up to this many tables, each is described in full; past it, one line each.
FULL_DETAIL_TABLES = 30
#: Longest policy expression quoted; longer ones are cut (the table's schema has them whole).
_EXPRESSION_CHARS = 160
_COMMANDS = {"SELECT": "read", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}
_SPACES = re.compile(r"\s+")
#: `'x'::text` → `'x'`: the cast Postgres prints on every string literal says nothing to a reader.
_TEXT_CASTS = re.compile(r"('(?:[^']|'')*')::(?:text|character varying)\b")
_TYPE_NAMES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "character varying": "varchar",
    "double precision": "float8",
}
#: The policy Kilnbase adds to every table for admins; said once, not per table.
_ADMIN_POLICY = "project_admin_policy"


@dataclass
class DatabaseView:
    """The database section: the caller's tables and views in one schema, as the service read them."""

    schema: str
    relations: list[DictRow]
    details: dict[str, list[DictRow]] | None
    edges: list[ForeignKeyEdge]
    routines: list[DictRow]


@dataclass
class ProjectView:
    """Everything the markdown says, gathered by the service."""

    version: str
    fingerprint: str
    #: The sections this caller may see, by key (`sections.visible`): the database's a `DatabaseView`, the
    #: others as `project_state.read` gives them. The rest are named at the end, with the scope they need.
    sections: dict[str, Any]
    #: The optional tables this database has (`project_state.installed`).
    installed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _short(expression: str | None) -> str:
    text = _TEXT_CASTS.sub(r"\1", _SPACES.sub(" ", expression or "").strip())
    while text.startswith("(") and text.endswith(")") and _balanced(text):
        text = text[1:-1].strip()
    return text if len(text) <= _EXPRESSION_CHARS else text[: _EXPRESSION_CHARS - 1] + "…"


def _balanced(text: str) -> bool:
    """Whether `text`'s outer parentheses enclose all of it (so the pair around it can go)."""
    depth = 0
    for position, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and position < len(text) - 1:
            return False
    return depth == 0


def _type(name: str) -> str:
    for long, short in _TYPE_NAMES.items():
        name = name.replace(long, short)
    return name


def _list(items: Sequence[str], empty: str = "none") -> str:
    return ", ".join(items) if items else empty


def _auth(auth: dict[str, Any]) -> list[str]:
    smtp = auth["smtpConfig"]
    verification = (
        f"required ({auth['verifyEmailMethod']}; sign-in fails until verified)"
        if auth["requireEmailVerification"]
        else "not required"
    )
    rules = [f">= {auth['passwordMinLength']} chars"]
    for key, label in (
        ("requireNumber", "a digit"),
        ("requireLowercase", "a lowercase letter"),
        ("requireUppercase", "an uppercase letter"),
        ("requireSpecialChar", "a special character"),
    ):
        if auth[key]:
            rules.append(label)
    providers = list(auth["oAuthProviders"]) + [f"{key} (custom)" for key in auth["customOAuthProviders"]]
    return [
        "## Auth",
        f"- sign-up: {'disabled' if auth['disableSignup'] else 'open'}; email verification: {verification}",
        f"- password: {', '.join(rules)}; reset by {auth['resetPasswordMethod']}",
        f"- OAuth providers: {_list(providers)}",
        f"- email sending (SMTP): {'configured' if smtp['enabled'] else 'not configured'}"
        + (
            " (so verification emails cannot go out: new users cannot sign in until SMTP is set up)"
            if auth["requireEmailVerification"] and not smtp["enabled"]
            else ""
        ),
    ]


def _column(row: DictRow, primary_key: Sequence[str], outgoing: dict[str, str]) -> str:
    text = f"{row['name']} {_type(row['type'])}"
    if row["name"] in primary_key:
        text += " pk"
    elif row["nullable"]:
        text += "?"
    if row["identity"]:
        text += " identity"
    elif row["generated"]:
        text += " generated"
    elif row["default"] is not None:
        text += f" ={_short(row['default'])}"
    if row["name"] in outgoing:
        text += f" ->{outgoing[row['name']]}"
    return text


def _policy(row: DictRow) -> str:
    text = f"{row['cmd']} to {','.join(row['roles'])}"
    if row["permissive"] == "RESTRICTIVE":
        text += " (restrictive)"
    if row["qual"] is not None:
        text += f" using ({_short(row['qual'])})"
    if row["withCheck"] is not None:
        text += f" check ({_short(row['withCheck'])})"
    return text


def _access(relation: DictRow) -> str:
    anon = [_COMMANDS[command] for command in relation["anon"]]
    return f"anon: {_list(anon)}"


def _relation_header(relation: DictRow) -> str:
    parts = [relation["kind"]] if relation["kind"] != "table" else []
    if relation["row_count"] is not None:
        parts.append(f"{'~' if relation['row_count_estimated'] else ''}{relation['row_count']} rows")
    if relation["kind"] == "table":
        parts.append("RLS on" if relation["rls"] else "RLS OFF")
    parts.append(_access(relation))
    return f"### {relation['name']} ({'; '.join(parts)})"


def _table_lines(view: DatabaseView, relation: DictRow) -> list[str]:
    assert view.details is not None
    name = relation["name"]
    constraints = [row for row in view.details["constraints"] if row["table"] == name]
    primary = next((row for row in constraints if row["type"] == "p"), None)
    primary_key = list(primary["columns"]) if primary else []
    outgoing: dict[str, str] = {}
    for row in constraints:
        if row["type"] == "f" and len(row["columns"]) == 1:
            target = (
                row["foreign_table"]
                if row["foreign_schema"] == view.schema
                else (f"{row['foreign_schema']}.{row['foreign_table']}")
            )
            outgoing[row["columns"][0]] = f"{target}.{row['foreign_columns'][0]}"
    columns = [row for row in view.details["columns"] if row["table"] == name]
    lines = [_relation_header(relation), "; ".join(_column(row, primary_key, outgoing) for row in columns)]
    for row in constraints:
        if row["type"] == "u":
            lines.append(f"unique ({', '.join(row['columns'])})")
        elif row["type"] == "f" and len(row["columns"]) > 1:
            lines.append(f"fk ({', '.join(row['columns'])}) ->{row['foreign_table']}")
    policies = [
        row for row in view.details["policies"] if row["table"] == name and row["name"] != _ADMIN_POLICY
    ]
    for row in policies:
        lines.append(f"- policy {row['name']}: {_policy(row)}")
    if relation["kind"] == "table" and relation["rls"] and not policies:
        lines.append("- no policies: only admins reach rows")
    embeds = sorted(
        {
            f"{edge.table}" if edge.foreign_table == name else f"{edge.foreign_table}"
            for edge in view.edges
            if name in (edge.table, edge.foreign_table) and edge.table != edge.foreign_table
        }
    )
    if embeds:
        lines.append(f"embeds: {', '.join(embeds)}")
    return lines


def _database(view: DatabaseView) -> list[str]:
    tables = [r for r in view.relations if r["kind"] == "table"]
    others = [r for r in view.relations if r["kind"] != "table"]
    lines = [
        f"## Database (schema {view.schema}: {len(tables)} tables, {len(others)} views)",
        "Records API: /api/database/records/<table> (PostgREST syntax; SDK `db.from(table)`), "
        "RPC: /api/database/rpc/<fn>. Columns: `?` nullable, `=` default, `->` foreign key. "
        f"Admins (API key) bypass policies ({_ADMIN_POLICY}).",
        f"- anon can read: {_list([r['name'] for r in view.relations if 'SELECT' in r['anon']])}",
        f"- anon can write: {_list([r['name'] for r in view.relations if set(r['anon']) - {'SELECT'}])}",
    ]
    open_tables = [r["name"] for r in tables if not r["rls"]]
    if open_tables:
        lines.append(f"- RLS OFF (every role with a grant sees all rows): {', '.join(open_tables)}")
    if view.details is None:
        lines.append(
            f"{len(view.relations)} relations: one line each; ask for a table's columns, keys and policies "
            "with `get-table-schema` (GET /api/metadata/<table>)."
        )
        for relation in view.relations:
            lines.append(f"- {_relation_header(relation)[4:]}")
    else:
        for relation in view.relations:
            lines.extend(_table_lines(view, relation))
    if view.routines:
        lines.append(
            "RPC functions: "
            + "; ".join(f"{r['name']}({r['arguments']}) -> {r['returns']}" for r in view.routines)
        )
    return lines


def _storage(storage: dict[str, Any] | None) -> list[str]:
    if storage is None:
        return ["## Storage", "Not available in this server yet (no storage API)."]
    buckets = [f"{b['name']} ({'public' if b['public'] else 'private'})" for b in storage["buckets"]]
    return ["## Storage", f"- buckets: {_list(buckets)}"]


def _functions(functions: list[dict[str, Any]] | None) -> list[str]:
    if functions is None:
        return ["## Edge functions", "Not available in this server yet (no functions API)."]
    if not functions:
        return ["## Edge functions", "- none deployed"]
    return ["## Edge functions"] + [
        f"- {f['slug']} ({f['status']}){': ' + _short(f['description']) if f['description'] else ''}"
        for f in functions
    ]


def _realtime_policy(policy: dict[str, Any]) -> str:
    """A realtime policy (the realtime slice's shape), written as a table's policy is."""
    return _policy(
        {
            "cmd": policy["command"],
            "roles": policy["roles"],
            "permissive": "PERMISSIVE",
            "qual": policy["using"],
            "withCheck": policy["withCheck"],
        }
    )


def _realtime(realtime: dict[str, Any] | None) -> list[str]:
    if realtime is None:
        return ["## Realtime", "Not available in this server yet (no realtime API)."]
    channels = []
    for channel in realtime["channels"]:
        text = channel["pattern"] + ("" if channel["enabled"] else " (disabled)")
        if channel["description"]:
            text += f": {_short(channel['description'])}"
        channels.append(text)
    lines = ["## Realtime", f"- channels: {_list(channels)}"]
    for kind in ("subscribe", "publish"):
        policies = realtime["permissions"][kind]["policies"]
        if policies:
            described = "; ".join(_realtime_policy(p) for p in policies)
            lines.append(f"- {kind}: {described}")
    return lines


def _ai(ai: dict[str, Any]) -> list[str]:
    models = [
        f"{c['modelId']} ({'+'.join(c['inputModality'])}->{'+'.join(c['outputModality'])})"
        for c in ai["configurations"]
    ]
    allowed = ai["allowedModels"]
    return [
        "## AI gateway",
        f"- configured models: {_list(models)}",
        f"- allowed models: {'any' if allowed is None else _list(allowed)}",
    ]


def _moment(iso: str) -> str:
    """`2025-03-01T09:30:12.345Z` as `2025-03-01 09:30 UTC`."""
    return f"{iso[:16].replace('T', ' ')} UTC"


def _named(text: str) -> str:
    """A name someone chose (a schedule's, a namespace), on one line whatever it holds."""
    return _SPACES.sub(" ", text).strip()


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _more(total: int, listed: int, what: str, tool: str | None = None) -> list[str]:
    if total <= listed:
        return []
    return [f"- {total - listed} more {what}" + (f": `{tool}`" if tool else " (not listed)")]


def _closing(items: Sequence[Any], total: int, what: str, tool: str, empty: str) -> list[str]:
    """The end of a list section: what makes one when there is none, or how many more there are."""
    return [f"- none ({empty})"] if not items else _more(total, len(items), what, tool)


def _schedules(section: dict[str, Any]) -> list[str]:
    lines = ["## Schedules"]
    for job in section["jobs"]:
        run = job["lastRun"]
        if run is None:
            last = "not run yet"
        else:
            outcome = "ok" if run["success"] else "FAILED"
            last = f"last run {outcome} ({run['statusCode']}) {_moment(run['at'])}"
        state = "active" if job["isActive"] else "off"
        call = f"{job['httpMethod']} {job['target'] or '?'}"
        lines.append(f"- {_named(job['name'])}: `{job['cronSchedule']}` {call}; {state}; {last}")
    empty = "`create-schedule` calls a URL or a function on a cron cadence"
    return lines + _closing(section["jobs"], section["total"], "schedules", "list-schedules", empty)


def _webhooks(section: dict[str, Any]) -> list[str]:
    lines = ["## Database webhooks"]
    window = section["recentFailuresWindowHours"]
    for hook in section["webhooks"]:
        parts = ["enabled" if hook["enabled"] else "disabled", "signed" if hook["hasSecret"] else "unsigned"]
        if hook["recentFailures"]:
            failed = _count(hook["recentFailures"], "failed delivery", "failed deliveries")
            parts.append(f"{failed} in {window}h")
        events = ",".join(hook["events"])
        target = f"{hook['tableName']} {events} -> {hook['urlHost'] or '?'}"
        lines.append(f"- {_named(hook['name'])}: {target}; " + "; ".join(parts))
    hooks, empty = section["webhooks"], "`create-database-webhook` POSTs a table's row changes to a URL"
    return lines + _closing(hooks, section["total"], "webhooks", "list-database-webhooks", empty)


def _backups(section: dict[str, Any]) -> list[str]:
    lines = ["## Database backups"]
    if section["latestCompletedAt"] is None:
        lines.append("- none yet: `create-database-backup` before a change that loses data")
    else:
        lines.append(
            f"- {_count(section['completed'], 'completed backup', 'completed backups')}, the latest "
            f"{_moment(section['latestCompletedAt'])} (`list-database-backups`)"
        )
    if section["running"]:
        lines.append("- a backup or restore is under way")
    schedule = section["schedule"]
    if schedule is not None:
        state = f"`{schedule['cronSchedule']}` (UTC)" if schedule["enabled"] else "off"
        lines.append(f"- schedule: {state}")
    return lines


def _advisor(section: dict[str, Any]) -> list[str]:
    lines = ["## Advisor"]
    scan = section["latestScan"]
    if scan is not None:
        counts = scan["summary"]
        lines.append(
            f"- latest scan {_moment(scan['scannedAt'])} ({scan['status']}): {counts['critical']} critical, "
            f"{counts['warning']} warning, {counts['info']} info (`get-advisor-issues`)"
        )
    if section["hint"]:
        lines.append(f"- {section['hint']}")
    return lines


def _counted(items: list[str], total: int, what: str) -> list[str]:
    return [f"- {what}: {_list(items)}", *_more(total, len(items), what)]


def _kv(section: dict[str, Any]) -> list[str]:
    names = [f"{_named(n['namespace'])} ({_count(n['keys'], 'key', 'keys')})" for n in section["namespaces"]]
    return [
        "## Key-value store",
        *_counted(names, section["totalNamespaces"], "global namespaces"),
    ]


def _memory(section: dict[str, Any], installed: bool) -> list[str]:
    if not installed:
        return ["## Agent memory", "Not available in this server (its database lacks pgvector)."]
    scopes = [
        f"{_named(s['scope'])} ({_count(s['memories'], 'memory', 'memories')})" for s in section["scopes"]
    ]
    return ["## Agent memory", *_counted(scopes, section["totalScopes"], "scopes")]


def _messaging(section: dict[str, Any]) -> list[str]:
    lines = ["## Messaging"]
    waiting = section["pending"] + section["sending"]
    if waiting == 0 and section["sentRecently"] == 0 and section["deadLetters"] == 0:
        return [*lines, "- nothing queued: `send-message` queues a transactional email"]
    lines.append(
        f"- {_count(waiting, 'message', 'messages')} queued, {section['sentRecently']} sent in the last "
        f"{section['recentWindowHours']} hours"
    )
    if section["deadLetters"]:
        dead = _count(section["deadLetters"], "message", "messages")
        lines.append(f"- {dead} gave up (`list-dead-letter-messages`, then retry one)")
    return lines


def _payments(section: dict[str, Any]) -> list[str]:
    lines = ["## Payments (Stripe, Razorpay)"]
    stripe = [env for env in section["stripe"] if env["status"] != "unconfigured"]
    razorpay = [env for env in section.get("razorpay", []) if env["status"] != "unconfigured"]
    if not stripe and not razorpay:
        return [
            *lines,
            "- not configured: a person sets a key (`PUT /api/payments/stripe/:env/config` or "
            "`/api/payments/razorpay/:env/config`)",
        ]
    for env in stripe:
        webhook = "webhook configured" if env["webhookConfigured"] else "no webhook yet"
        lines.append(
            f"- {env['environment']}: {env['status']}, {webhook}, "
            f"{_count(env['activeProducts'], 'active product', 'active products')}, "
            f"{_count(env['activeSubscriptions'], 'active subscription', 'active subscriptions')} "
            "(`list-stripe-catalog`)"
        )
    for env in razorpay:
        webhook = "webhook configured" if env["webhookConfigured"] else "no webhook yet"
        lines.append(
            f"- Razorpay {env['environment']}: {env['status']}, {webhook}, "
            f"{_count(env['activePlans'], 'active plan', 'active plans')}, "
            f"{_count(env['activeSubscriptions'], 'active subscription', 'active subscriptions')} "
            "(`list-razorpay-catalog`)"
        )
    return lines


def _installed(write: Callable[[Any], list[str]]) -> Callable[[Any, bool], list[str]]:
    """A section's writer that says the capability is absent when its table is (`write(None)`)."""
    return lambda found, installed: write(found if installed else None)


def _always(write: Callable[[Any], list[str]]) -> Callable[[Any, bool], list[str]]:
    return lambda found, _installed: write(found)


#: Each section's lines, from what was read for it and whether its capability's table exists.
_WRITERS: dict[Section, Callable[[Any, bool], list[str]]] = {
    AUTH: _always(_auth),
    DATABASE: _always(_database),
    STORAGE: _installed(_storage),
    FUNCTIONS: _installed(_functions),
    REALTIME: _installed(_realtime),
    AI: _always(_ai),
    SCHEDULES: _always(_schedules),
    WEBHOOKS: _always(_webhooks),
    BACKUPS: _always(_backups),
    ADVISOR: _always(_advisor),
    KV: _always(_kv),
    MEMORY: _memory,
    MESSAGING: _always(_messaging),
    PAYMENTS: _always(_payments),
}


def render(view: ProjectView) -> str:
    lines = [f"# Kilnbase backend (InsForge API {view.version})", f"schema fingerprint: {view.fingerprint}"]
    lines += view.notes
    hidden = []
    for section in SECTIONS:
        if section.key not in view.sections:
            hidden.append(section)
            continue
        installed = section.table is None or section.table in view.installed
        lines += ["", *_WRITERS[section](view.sections[section.key], installed)]
    if hidden:
        needed = ", ".join(f"{s.key} ({s.group}:read)" for s in hidden)
        lines += ["", "## Not shown", f"- this key's scopes do not reach: {needed}"]
    return "\n".join(lines) + "\n"
