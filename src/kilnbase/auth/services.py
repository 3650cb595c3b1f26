"""Auth's services, built once at startup from the core (`Auth.build`): accounts, email flows, OAuth sign-in
and the admin service, over one shared `AuthParts`. Routes are given this; so will the MCP tools and the CLI.

Tests choose auth's tunables through `Settings(auth=AuthSettings(...))`, never by swapping fields on a live
object.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kilnbase.auth.accounts import Accounts
from kilnbase.auth.admin import AuthAdmin
from kilnbase.auth.email_flows import EmailFlows
from kilnbase.auth.oauth_flow import OAuthSignIn
from kilnbase.auth.parts import AuthParts
from kilnbase.capability import Core


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
        """While the server runs; on the way out, emails still on their way get a few seconds."""
        try:
            yield
        finally:
            await self.parts.mailer.drain()
