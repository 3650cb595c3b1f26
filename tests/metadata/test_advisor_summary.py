"""The advisor's section of `/api/metadata`: the latest scan's time and counts by severity, and a hint to scan
when there is no scan, it failed, or it is stale. A module of its own: a database has one latest scan, so
this test owns its module's database."""

from __future__ import annotations

import psycopg
from starlette.testclient import TestClient


def test_advisor_section_follows_the_latest_scan(
    client: TestClient, admin: dict[str, str], database_url: str
) -> None:
    before = client.get("/api/metadata", headers=admin).json()["advisor"]
    assert before["latestScan"] is None and "run-advisor-scan" in before["hint"]
    markdown = client.get("/api/metadata?format=markdown", headers=admin).text
    assert "## Advisor\n- No scan yet. Run `run-advisor-scan`" in markdown

    scanned = client.post("/api/advisor/scan", headers=admin)
    assert scanned.status_code in (200, 201), scanned.text
    summary = client.get("/api/advisor/latest", headers=admin).json()["summary"]
    advisor = client.get("/api/metadata", headers=admin).json()["advisor"]
    scan = advisor["latestScan"]
    assert scan["status"] == "completed" and scan["scannedAt"].endswith("Z")
    assert scan["summary"] == summary and advisor["hint"] is None
    markdown = client.get("/api/metadata?format=markdown", headers=admin).text
    assert (
        f"({scan['status']}): {summary['critical']} critical, {summary['warning']} warning, "
        f"{summary['info']} info (`get-advisor-issues`)"
    ) in markdown

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("update system.advisor_scans set scanned_at = scanned_at - interval '2 days'")
    stale = client.get("/api/metadata", headers=admin).json()["advisor"]
    assert stale["latestScan"]["summary"] == summary
    assert stale["hint"].startswith("The latest scan is over 24 hours old. Run `run-advisor-scan`")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("insert into system.advisor_scans (status, error_message) values ('failed', 'boom')")
    failed = client.get("/api/metadata", headers=admin).json()["advisor"]
    # The counts stay those of the latest completed scan, as the advisor's own summary has them.
    assert failed["latestScan"]["status"] == "failed" and failed["latestScan"]["summary"] == summary
    assert failed["hint"].startswith("The latest scan failed.") and "boom" not in str(failed)
