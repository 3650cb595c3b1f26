"""Every `KILNBASE_*` name the code reads is one `known_variables` knows, so `kilnbase serve` never warns
that a real setting is a typo."""

from __future__ import annotations

import re
from pathlib import Path

from kilnbase.config import known_variables

SOURCE = Path(__file__).resolve().parents[2] / "src" / "kilnbase"


def test_every_variable_named_in_the_code_is_known() -> None:
    named = {
        match
        for path in SOURCE.rglob("*.py")
        for match in re.findall(r"\bKILNBASE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert len(named) >= 30  # (the pattern finds them)
    assert named - known_variables() == set()
