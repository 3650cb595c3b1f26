"""Auth's services, built once at startup from the core (`Auth.build`): accounts, email flows, OAuth sign-in
and the admin service, over one shared `AuthParts`. Routes are given this; so will the MCP tools and the CLI.

Tests choose auth's tunables through `Settings(auth=AuthSettings(...))`, never by swapping fields on a live
object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg

from kilnbase.auth.accounts import Accounts
from kilnbase.auth.admin import AuthAdmin
from kilnbase.auth.email_flows import EmailFlows
from kilnbase.auth.oauth_flow import OAuthSignIn
from kilnbase.auth.parts import AuthParts
from kilnbase.capability import Core

log = logging.getLogger("kilnbase.auth")
#: How often each process deletes the sessions that expired (they can never be used again).
SESSION_SWEEP_SECONDS = 3600.0


@dataclass(frozen=True)
class Auth:
    parts: AuthParts
    accounts: Accounts
    email: EmailFlows
    oauth: OAuthSignIn
    admin: AuthAdmin

    @classmethod
    def build(cls, core: Core) -> Auth:
        parts = AuthParts.build(core)
        accounts = Accounts(parts)
        return cls(
            parts=parts,
            accounts=accounts,
            email=EmailFlows(parts, accounts),
            oauth=OAuthSignIn(parts, accounts),
            admin=AuthAdmin(parts),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While the server runs: expired sessions pruned now and then; on the way out, emails still on
        their way get a few seconds."""
        sweeping = asyncio.create_task(self._prune_sessions())
        try:
            yield
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await self.parts.mailer.drain()

    async def _prune_sessions(self) -> None:
        """At start and every `SESSION_SWEEP_SECONDS` (each process; deleting twice is harmless)."""
        while True:
            try:
                pruned = await self.parts.sessions.prune_expired()
                if pruned:
                    log.info("pruned %d expired sessions", pruned)
            except psycopg.Error as exc:
                log.warning("could not prune expired sessions: %s", type(exc).__name__)
            await asyncio.sleep(SESSION_SWEEP_SECONDS)
