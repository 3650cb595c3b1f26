"""The `Prefer` header (PostgREST's preferences.rst): parsed, validated, echoed in `Preference-Applied`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kilnbase.records.errors import RecordsError

_ALLOWED = {
    "return": {"minimal", "headers-only", "representation"},
    "count": {"exact", "planned", "estimated"},
    "resolution": {"merge-duplicates", "ignore-duplicates"},
    "missing": {"default", "null"},
    "handling": {"strict", "lenient"},
}


@dataclass
class Preferences:
    return_: str | None = None
    count: str | None = None
    resolution: str | None = None
    missing: str | None = None
    handling: str | None = None
    max_affected: int | None = None
    invalid: list[str] = field(default_factory=list)

    def applied(self, *, mutation: bool, upsert_allowed: bool = True) -> str:
        """The `Preference-Applied` value: only what this request honoured."""
        parts: list[str] = []
        if self.resolution and upsert_allowed:
            parts.append(f"resolution={self.resolution}")
        if self.missing and mutation:
            parts.append(f"missing={self.missing}")
        if self.return_ and mutation:
            parts.append(f"return={self.return_}")
        if self.count:
            parts.append(f"count={self.count}")
        if self.handling:
            parts.append(f"handling={self.handling}")
        if self.max_affected is not None and self.handling == "strict":
            parts.append(f"max-affected={self.max_affected}")
        return ", ".join(parts)


def parse_preferences(values: Iterable[str]) -> Preferences:
    """Every `Prefer` header (there may be several, each comma-separated)."""
    prefs = Preferences()
    for header in values:
        for raw in header.split(","):
            item = raw.strip()
            if not item:
                continue
            key, _, value = item.partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "max-affected" and value.isascii() and value.isdigit() and len(value) <= 18:
                prefs.max_affected = int(value)
            elif key in _ALLOWED and value in _ALLOWED[key]:
                setattr(prefs, "return_" if key == "return" else key, value)
            elif key in ("timezone", "tx", "params"):
                # Known to PostgREST, but not configurable here: ignored as lenient handling would.
                prefs.invalid.append(item)
            else:
                prefs.invalid.append(item)
    if prefs.handling == "strict" and prefs.invalid:
        raise RecordsError(
            400,
            "PGRST122",
            "Invalid preferences given with handling=strict",
            "Invalid preferences: " + ", ".join(prefs.invalid),
        )
    return prefs
