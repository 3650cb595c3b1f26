"""The log scrubber removes credentials whatever shape they arrive in."""

from __future__ import annotations

import json
import logging

from kilnbase.logs.structured import JsonFormatter, scrub


def test_scrub_removes_keys_tokens_and_passwords() -> None:
    api_key = "ik_" + "a1" * 32
    anon_key = "anon_" + "b2" * 32
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = (
        f"key={api_key} anon {anon_key} bearer {jwt} /x?password=hunter2&a=1 "
        "postgresql://postgres:s3cret@127.0.0.1/db"
    )
    cleaned = scrub(text)
    for secret in (api_key, anon_key, jwt, "hunter2", "s3cret"):
        assert secret not in cleaned
    assert "a=1" in cleaned and "127.0.0.1/db" in cleaned


def test_formatter_writes_one_json_object_with_fields() -> None:
    record = logging.LogRecord("kilnbase.request", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"path": "/api/health", "status": 200}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/api/health" and entry["status"] == 200 and entry["level"] == "info"
