"""Reaching the services of an app under test (routes are given theirs; tests ask the app)."""

from __future__ import annotations

from starlette.testclient import TestClient

from kilnbase.app import KilnbaseApp
from kilnbase.services import Services


def services_of(client: TestClient) -> Services:
    app = client.app
    assert isinstance(app, KilnbaseApp)
    return app.services
