"""The advisor's tests: sessions idle in a transaction, or queries running, for more than a second count (the
default, five minutes, is no time for a test)."""

from __future__ import annotations

import pytest

from kilnbase.config import AdvisorSettings, Settings


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        advisor=AdvisorSettings(activity_threshold_seconds=1),
    )
