"""The interface between the app and its capabilities: what each is given (`Core`), what it gives back
(`Capability`).

`Core` is what a running server holds that every capability may use, built once at startup with no optional
fields: settings, keys, tokens, the secret box, the database, the schema cache, the rate limiter. A capability
builds its service from it, then offers a `Capability`: its routes, its lifespan (started in the app's order,
stopped in reverse, through one exit stack) and its MCP tools. `app.py` is the list of them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.routing import BaseRoute

from kilnbase.config import Settings
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.http.rate_limit import RateLimiter
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox

#: Which body limit of the settings applies to a path: JSON APIs, the model gateway, file uploads.
BodySurface = Literal["json", "gateway", "upload"]


@dataclass(frozen=True)
class Core:
    settings: Settings
    keys: ProjectKeys
    tokens: TokenService
    secret_box: SecretBox
    database: Database
    schema_cache: SchemaCache
    rate_limiter: RateLimiter
    started_at: float = field(default_factory=time.time)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the pools and start the schema cache; stop both, in reverse, on the way out."""
        await self.database.open()
        try:
            await self.schema_cache.start()
            try:
                yield
            finally:
                await self.schema_cache.stop()
        finally:
            await self.database.close()


@dataclass(frozen=True)
class Tool:
    """An MCP tool a capability offers: `run`'s signature is its input schema (the MCP SDK reads it)."""

    name: str
    description: str
    run: Callable[..., Awaitable[Any]]
    read_only: bool = True


def _no_lifespan() -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Capability:
    name: str
    routes: Sequence[BaseRoute]
    #: Entered when the server starts (in the app's order), left when it stops (in reverse).
    lifespan: Callable[[], AbstractAsyncContextManager[None]] = _no_lifespan
    tools: Sequence[Tool] = ()
    #: Path prefixes whose request bodies fall under a limit other than the JSON one.
    body_limits: Mapping[str, BodySurface] = field(default_factory=dict)
