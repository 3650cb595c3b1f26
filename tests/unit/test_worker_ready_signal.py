"""A worker of `kilnbase serve --workers N` tells its supervisor it has started by leaving a file in a folder
the supervisor made. Only the supervisor's banner waits for that file: if the folder is gone (its
supervisor crashed, or was replaced), the worker still starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kilnbase import workers


def test_a_worker_leaves_its_pid_where_the_supervisor_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILNBASE_SUPERVISED_READY_DIR", str(tmp_path))
    workers._worker_ready()
    assert [entry.name for entry in tmp_path.iterdir()] == [str(os.getpid())]


def test_a_worker_whose_supervisors_folder_is_gone_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILNBASE_SUPERVISED_READY_DIR", str(tmp_path / "gone"))
    workers._worker_ready()  # (raising here would fail the worker's app start)
    assert not (tmp_path / "gone").exists()
