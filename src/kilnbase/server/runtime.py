"""What a running server holds: settings, keys, tokens and the database. Routes reach it via `runtime_of`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import Scope

from kilnbase.auth.settings import AuthSettings
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.http.access_tokens import TokenService
from kilnbase.http.rate_limit import InProcessRateLimiter, RateLimiter
from kilnbase.records.schema_cache import SchemaCache
from kilnbase.secrets.encryption import SecretBox
from kilnbase.server.project_keys import ProjectKeys


@dataclass
class Runtime:
    settings: Settings
    keys: ProjectKeys
    tokens: TokenService
    secret_box: SecretBox
    db: Database | None = None
    schema_cache: SchemaCache | None = None
    started_at: float = field(default_factory=time.time)
    auth_settings: AuthSettings = field(default_factory=lambda: AuthSettings())
    rate_limiter: RateLimiter = field(default_factory=InProcessRateLimiter)
    #: Services built from the fields above on first use (auth.services.auth_services).
    auth_cache: object | None = None

    @property
    def database(self) -> Database:
        if self.db is None:
            raise RuntimeError("the database is not open yet")
        return self.db


def runtime_of(request: Request) -> Runtime:
    return runtime_in(request.scope)


def runtime_in(scope: Scope) -> Runtime:
    """The same for plain ASGI endpoints."""
    runtime: Runtime = scope["app"].state.runtime
    return runtime
