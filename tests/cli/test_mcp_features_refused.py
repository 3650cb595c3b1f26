"""`kilnbase mcp --features` naming a group no capability offers, as an agent's config mistypes it: refused
in one line naming the groups there are, rather than an MCP server that offers the agent nothing."""

from __future__ import annotations

from pathlib import Path

from kilnbase.config import Settings
from kilnbase.keys.project_keys import load_project_keys
from tests.support.cli import run_kilnbase
from tests.support.postgres import TestCluster


def test_a_feature_group_that_does_not_exist(cluster: TestCluster, tmp_path: Path) -> None:
    load_project_keys(Settings(data_dir=tmp_path))

    result = run_kilnbase(
        ["mcp", "--features", "database,auth,stroage"],
        data_dir=tmp_path,
        env={"DATABASE_URL": cluster.create_database()},
        columns=200,
    )

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    said = result.stderr.strip().splitlines()[-1]  # (after the note on the credential it acts with)
    assert said.startswith("Error: --features: no feature group is named stroage; the groups are "), said
    groups = said.split("the groups are ")[1].rstrip(".").split(", ")
    assert {"database", "auth", "storage", "functions"} <= set(groups)
