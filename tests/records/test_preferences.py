"""The `Prefer` header and the `Accept` header, normalised (no database)."""

from __future__ import annotations

import pytest

from kilnbase.records import media_type
from kilnbase.records.errors import RecordsError
from kilnbase.records.media_type import negotiate
from kilnbase.records.preferences import NO_PREFERENCES, Preferences, parse_preferences

pytestmark = pytest.mark.no_postgres


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, NO_PREFERENCES),
        ("", NO_PREFERENCES),
        ("return=minimal", Preferences(return_="minimal")),
        (
            "return=representation,count=exact, resolution=merge-duplicates",
            Preferences(return_="representation", count="exact", resolution="merge-duplicates"),
        ),
        ("missing=default,handling=lenient", Preferences(missing="default", handling="lenient")),
        ("handling=strict, max-affected=5", Preferences(handling="strict", max_affected=5)),
        ("count=exact,count=planned", Preferences(count="planned")),  # the last one wins
        ("RETURN=minimal", Preferences(return_="minimal")),
        # Ignored: unknown, not configurable here, or not a value the preference takes.
        ("timezone=UTC, tx=rollback, params=single-object", NO_PREFERENCES),
        ("return=everything, count=1, frobnicate", NO_PREFERENCES),
        ("max-affected=²", NO_PREFERENCES),
        ("max-affected=-1", NO_PREFERENCES),
        ("max-affected=" + "9" * 19, NO_PREFERENCES),
    ],
)
def test_preferences_are_normalised(header: str | None, expected: Preferences) -> None:
    assert parse_preferences(header) == expected


@pytest.mark.parametrize("header", ["handling=strict, frobnicate", "max-affected=²,handling=strict"])
def test_strict_handling_refuses_what_it_would_ignore(header: str) -> None:
    with pytest.raises(RecordsError) as caught:
        parse_preferences(header)
    assert (caught.value.status, caught.value.code) == (400, "PGRST122")
    assert (
        caught.value.details
        == "Invalid preferences: " + header.split(",")[0 if header.startswith("max") else 1].strip()
    )


def test_preference_applied_names_what_was_honoured() -> None:
    prefs = Preferences("representation", "exact", "merge-duplicates", "default", "strict", 3)
    assert prefs.applied(mutation=True) == (
        "resolution=merge-duplicates, missing=default, return=representation, count=exact, "
        "handling=strict, max-affected=3"
    )
    assert (
        prefs.applied(mutation=False, upsert_allowed=False) == "count=exact, handling=strict, max-affected=3"
    )
    assert Preferences(max_affected=3).applied(mutation=True) == ""
    assert Preferences(max_affected=3).strict_max_affected is None
    assert prefs.strict_max_affected == 3


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, media_type.JSON),
        ("  ", media_type.JSON),
        ("application/json", media_type.JSON),
        ("Application/JSON", media_type.JSON),
        ("*/*", media_type.JSON),
        ("text/csv", media_type.CSV),
        ("application/vnd.pgrst.object+json", media_type.OBJECT),
        ("application/vnd.pgrst.object", media_type.OBJECT),
        ("application/vnd.pgrst.array+json;nulls=stripped", media_type.STRIPPED),
        ("application/xml, text/csv;q=0.2", media_type.CSV),
        ("text/csv;q=0.5, application/json", media_type.JSON),
        ("text/csv;q=bad, application/json;q=0.1", media_type.JSON),
    ],
)
def test_negotiation(accept: str | None, media: str) -> None:
    assert negotiate(accept) == media


@pytest.mark.parametrize("accept", ["application/xml", "text/csv;q=0", "image/png, text/html"])
def test_nothing_acceptable_is_406(accept: str) -> None:
    with pytest.raises(RecordsError) as caught:
        negotiate(accept)
    assert (caught.value.status, caught.value.code) == (406, "PGRST107")
