"""The `Prefer` header (PostgREST's preferences.rst): parsed, validated, echoed in `Preference-Applied`.

`Preferences` holds only what the engine honours, normalised: an unknown preference, or a known one with a
value it does not take, is dropped here (PostgREST ignores them unless `handling=strict`, which refuses
them with PGRST122). So two requests that differ only in what is ignored have equal preferences, and the
per-shape memory, keyed by them, cannot be grown with made-up preferences.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from kilnbase.records.errors import RecordsError

_ALLOWED: dict[str, frozenset[str]] = {
    "return": frozenset({"minimal", "headers-only", "representation"}),
    "count": frozenset({"exact", "planned", "estimated"}),
    "resolution": frozenset({"merge-duplicates", "ignore-duplicates"}),
    "missing": frozenset({"default", "null"}),
    "handling": frozenset({"strict", "lenient"}),
    "tx": frozenset({"commit", "rollback"}),
}
#: `max-affected` takes at most this many digits (as `limit` does): `int()` of more is slow, then refused.
_MAX_DIGITS = 18


class Preferences(NamedTuple):
    """What the engine honours of the `Prefer` header. A tuple: hashed and compared in C, since the
    per-shape memory keys on it for every request."""

    return_: str | None = None
    count: str | None = None  # type: ignore[assignment]  # (shadows `tuple.count`, which nothing here calls)
    resolution: str | None = None
    missing: str | None = None
    handling: str | None = None
    max_affected: int | None = None
    tx: str | None = None  # "commit" or "rollback", when the server lets a request choose (`db-tx-end`)

    def applied(self, *, mutation: bool, upsert_allowed: bool = True, missing_allowed: bool = True) -> str:
        """The `Preference-Applied` value: only what this request honoured."""
        return _applied(self, mutation, upsert_allowed, missing_allowed)

    @property
    def strict_max_affected(self) -> int | None:
        """The `max-affected` limit, when `handling=strict` makes it one (else it is only a hint)."""
        return self.max_affected if self.handling == "strict" else None


@functools.lru_cache(maxsize=256)
def _applied(prefs: Preferences, mutation: bool, upsert_allowed: bool, missing_allowed: bool) -> str:
    """`Preferences.applied`, remembered: every answer asks, and requests repeat a handful of preferences
    (256 kept: `max-affected` may take many values)."""
    parts: list[str] = []
    if prefs.resolution and upsert_allowed:
        parts.append(f"resolution={prefs.resolution}")
    if prefs.missing and mutation and missing_allowed:
        parts.append(f"missing={prefs.missing}")
    if prefs.return_ and mutation:
        parts.append(f"return={prefs.return_}")
    if prefs.count:
        parts.append(f"count={prefs.count}")
    if prefs.tx:
        parts.append(f"tx={prefs.tx}")
    if prefs.handling:
        parts.append(f"handling={prefs.handling}")
    if prefs.max_affected is not None and prefs.handling == "strict":
        parts.append(f"max-affected={prefs.max_affected}")
    return ", ".join(parts)


#: No `Prefer` header (the common case): nothing to parse.
NO_PREFERENCES = Preferences()


def parse_preferences(header: str | None, *, allow_tx: bool = False) -> Preferences:
    """The `Prefer` header (several headers arrive joined with `,`), normalised. `tx=` is a preference
    PostgREST knows (never invalid), honoured only when the server allows it (`allow_tx`)."""
    if not header:
        return NO_PREFERENCES
    return_ = count = resolution = missing = handling = tx = None
    max_affected: int | None = None
    invalid: list[str] = []
    for raw in header.split(","):
        item = raw.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if value not in _ALLOWED.get(key, ()):
            if key == "max-affected" and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
                max_affected = int(value)
            else:
                # Unknown, or known to PostgREST but not configurable here (timezone, params):
                # ignored, as lenient handling would.
                invalid.append(item)
        elif key == "return":
            return_ = value
        elif key == "count":
            count = value
        elif key == "resolution":
            resolution = value
        elif key == "missing":
            missing = value
        elif key == "tx":
            tx = value if allow_tx else None
        else:
            handling = value
    if handling == "strict" and invalid:
        raise RecordsError(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
            "Invalid preferences: " + ", ".join(invalid),
        )
    return Preferences(return_, count, resolution, missing, handling, max_affected, tx)
