"""Which changes a change-events subscriber asked for: the table, the event, and a PostgREST-style filter.

A subscription names its table in the channel, `postgres_changes:<schema>:<table>`, optionally followed by
`:<column>=<operator>.<value>` (PostgREST's and Supabase's filter grammar: `eq`, `neq`, `lt`, `lte`, `gt`,
`gte`, `in.(a,b,c)`), so that `@insforge/sdk`'s `subscribe(channel)` can ask for one unchanged. The filter is
applied to the row's new values (to the old ones for a DELETE, which carry the primary key only unless the
table's replica identity is FULL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PREFIX = "postgres_changes:"
EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]{0,62})=(eq|neq|lt|lte|gt|gte|in)\.(.*)$", re.S)


class BadSubscription(ValueError):
    """The channel or filter cannot be understood; the message says why."""


@dataclass(frozen=True)
class Filter:
    column: str
    operator: str
    value: str | tuple[str, ...]

    def matches(self, row: dict[str, Any]) -> bool:
        if self.column not in row:
            return False
        actual = row[self.column]
        if self.operator == "in":
            return any(_equal(actual, value) for value in self.value)
        assert isinstance(self.value, str)
        if self.operator == "eq":
            return _equal(actual, self.value)
        if self.operator == "neq":
            return actual is not None and not _equal(actual, self.value)
        if actual is None:
            return False
        left, right = _comparable(actual, self.value)
        try:
            outcomes = {"lt": left < right, "lte": left <= right, "gt": left > right, "gte": left >= right}
        except TypeError:
            return False
        return bool(outcomes[self.operator])


def _comparable(actual: Any, text: str) -> tuple[Any, Any]:
    if isinstance(actual, bool):
        return actual, text.lower() == "true"
    if isinstance(actual, int | float):
        try:
            return actual, float(text)
        except ValueError:
            return str(actual), text
    return str(actual), text


def _equal(actual: Any, text: str) -> bool:
    if actual is None:
        return text == "null"
    left, right = _comparable(actual, text)
    return bool(left == right)


@dataclass(frozen=True)
class ChangeSubscription:
    schema: str
    table: str
    event: str = "*"
    filter: Filter | None = None

    def wants(self, change_type: str, record: dict[str, Any], old_record: dict[str, Any]) -> bool:
        if self.event not in ("*", change_type):
            return False
        if self.filter is None:
            return True
        return self.filter.matches(old_record if change_type == "DELETE" else record)


def parse_channel(channel: str, event: Any = "*") -> ChangeSubscription:
    """`postgres_changes:<schema>:<table>[:<filter>]` and the event asked for (`*` by default)."""
    if event is None:
        event = "*"
    if not isinstance(event, str) or event.upper() not in EVENTS:
        raise BadSubscription("event must be one of *, INSERT, UPDATE, DELETE")
    parts = channel[len(PREFIX) :].split(":", 2)
    if len(parts) < 2 or not all(_IDENTIFIER.match(part) for part in parts[:2]):
        raise BadSubscription("Subscribe to postgres_changes:<schema>:<table>[:<column>=<op>.<value>]")
    schema, table = parts[0], parts[1]
    row_filter = None
    if len(parts) == 3:
        matched = _FILTER.match(parts[2])
        if matched is None:
            raise BadSubscription("The filter must be <column>=<eq|neq|lt|lte|gt|gte|in>.<value>")
        column, operator, raw = matched.groups()
        value: str | tuple[str, ...] = raw
        if operator == "in":
            if not (raw.startswith("(") and raw.endswith(")")):
                raise BadSubscription("in needs a list: in.(a,b,c)")
            value = tuple(item.strip().strip('"') for item in raw[1:-1].split(",") if item.strip())
        row_filter = Filter(column, operator, value)
    return ChangeSubscription(schema, table, event.upper(), row_filter)
