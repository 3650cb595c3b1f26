"""The dashboard's root admin: one account from `ROOT_ADMIN_USERNAME`/`ROOT_ADMIN_PASSWORD`, with no row in
`auth.users` (as in InsForge). Its sessions are stored like users' sessions, with kind 'admin'."""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

from kilnbase.auth.sessions import Subject

_NAMESPACE = uuid.UUID("6f0c5f1e-3c55-4b8e-9a53-6b696c6e6261")


def admin_subject(username: str) -> Subject:
    subject = str(uuid.uuid5(_NAMESPACE, username))
    return Subject(kind="admin", subject=subject, email=username, role="project_admin", user_id=None)


def credentials_match(username: str, password: str, expected_username: str, expected_password: str) -> bool:
    """Both compared in constant time, and both always compared (no early exit on a wrong name)."""
    name_ok = hmac.compare_digest(username.encode(), expected_username.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    return name_ok and password_ok


def admin_user_json(who: Subject, started_at: float) -> dict[str, Any]:
    created = datetime.fromtimestamp(started_at, UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": who.subject,
        "email": who.email,
        "emailVerified": True,
        "providers": [],
        "createdAt": created,
        "updatedAt": created,
        "profile": {"name": "Administrator"},
        "metadata": {},
        "role": "project_admin",
    }
