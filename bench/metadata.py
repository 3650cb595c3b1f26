"""Metadata benchmark: how big the backend's description is for an agent, and how long it takes to build,
for generated projects of 1, 10 and 100 tables (`tests/metadata/project_generator.py`: keys, foreign keys,
RLS and two policies per table).

    .venv/bin/python -m bench.metadata [--runs 20]

Tokens are characters / 4. Forms: the markdown (`?format=markdown`), what `get-backend-metadata` receives
(`?mcp=true`, printed by the MCP server as indented JSON), and InsForge's JSON (`GET /api/metadata`, indented
as the MCP server would print it). Anchor, in the same run: one query of `information_schema.columns` for the
project's tables over psycopg, the least a tool reading the schema pays. Target (issue 15): a 10-table
project under 2,000 tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from starlette.testclient import TestClient
from tests.metadata.project_generator import project_sql
from tests.support.app import admin_headers
from tests.support.postgres import TestCluster

from kilnbase.app import create_app
from kilnbase.config import Settings

SIZES = (1, 10, 100)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(cluster: TestCluster, tables: int, runs: int) -> dict[str, float]:
    url = cluster.create_database("bench")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(project_sql(tables).encode())
    settings = Settings(database_url=url, data_dir=Path(tempfile.mkdtemp(prefix="kbbench-")))
    with TestClient(create_app(settings)) as client:
        admin = admin_headers(client)
        markdown = client.get("/api/metadata?format=markdown", headers=admin).text
        mcp = json.dumps(client.get("/api/metadata?mcp=true", headers=admin).json(), indent=2)
        full = json.dumps(client.get("/api/metadata", headers=admin).json(), indent=2)
        timings: dict[str, list[float]] = {"markdown": [], "json": [], "table": []}
        for _ in range(runs):
            for name, path in (
                ("markdown", "/api/metadata?format=markdown"),
                ("json", "/api/metadata"),
                ("table", "/api/metadata/profiles"),
            ):
                started = time.perf_counter()
                assert client.get(path, headers=admin).status_code == 200
                timings[name].append(time.perf_counter() - started)
    anchor: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(
                "select table_name, column_name, data_type, is_nullable, column_default "
                "from information_schema.columns where table_schema = 'public'"
            ).fetchall()
            anchor.append(time.perf_counter() - started)
    return {
        "markdown_tokens": len(markdown) / 4,
        "mcp_tokens": len(mcp) / 4,
        "json_tokens": len(full) / 4,
        "markdown_ms": _median_ms(timings["markdown"]),
        "json_ms": _median_ms(timings["json"]),
        "table_ms": _median_ms(timings["table"]),
        "anchor_ms": _median_ms(anchor),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    cluster = TestCluster()
    try:
        rows = {tables: measure(cluster, tables, args.runs) for tables in SIZES}
    finally:
        cluster.close()
    print(
        f"{'tables':>6} {'md tokens':>10} {'mcp tokens':>11} {'json tokens':>12} "
        f"{'md ms':>7} {'json ms':>8} {'table ms':>9} {'anchor ms':>10}"
    )
    for tables, row in rows.items():
        tokens = f"{row['markdown_tokens']:>10.0f} {row['mcp_tokens']:>11.0f} {row['json_tokens']:>12.0f}"
        times = f"{row['markdown_ms']:>7.1f} {row['json_ms']:>8.1f} {row['table_ms']:>9.1f}"
        print(f"{tables:>6} {tokens} {times} {row['anchor_ms']:>10.2f}")
    print(f"10-table markdown under 2,000 tokens: {'yes' if rows[10]['markdown_tokens'] < 2000 else 'NO'}")


if __name__ == "__main__":
    main()
