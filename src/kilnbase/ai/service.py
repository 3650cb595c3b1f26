"""The model gateway as the app holds it: the Gateway with its collaborators, and the database and secret box
the admin surface needs. Built once at startup; closed once at shutdown, before the database pool, so that
queued usage rows are written."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kilnbase.ai.admin import Admin
from kilnbase.ai.gateway import Gateway
from kilnbase.ai.gateway_factory import build_gateway, close_gateway
from kilnbase.config import Settings
from kilnbase.db.session import Database
from kilnbase.identity.actor import Actor
from kilnbase.keys.secret_box import SecretBox


@dataclass(frozen=True)
class AiService:
    gateway: Gateway
    database: Database
    secret_box: SecretBox

    @classmethod
    def build(cls, settings: Settings, secret_box: SecretBox, database: Database) -> AiService:
        return cls(build_gateway(settings, secret_box, lambda: database), database, secret_box)

    def admin(self, actor: Actor) -> Admin:
        """The admin surface, acting for `actor` (audited under its name)."""
        return Admin(self.database, self.gateway, self.secret_box, actor)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await close_gateway(self.gateway)  # while the pool is open: it writes the queued usage rows
