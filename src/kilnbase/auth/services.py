"""Auth's services, built once at startup from the core (`Auth.build`): accounts, email flows, an app's own
emails, OAuth sign-in, device authorization, the admin service and the external JWT providers, over one
shared `AuthParts`. Routes are given this; so will the MCP tools and the CLI.

Tests choose auth's tunables through `Settings(auth=AuthSettings(...))`, never by swapping fields on a live
object.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kilnbase.auth.accounts import Accounts
from kilnbase.auth.admin import AuthAdmin
from kilnbase.auth.device_authorizations import DeviceAuthorizations
from kilnbase.auth.email_flows import EmailFlows
from kilnbase.auth.jwt_providers import JwtProviders
from kilnbase.auth.oauth_flow import OAuthSignIn
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.raw_email import RawEmails
from kilnbase.capability import Core
from kilnbase.db.periodic import repeating

log = logging.getLogger("kilnbase.auth")
#: How often each process deletes the sessions that expired (they can never be used again).
SESSION_SWEEP_SECONDS = 3600.0
#: The first sweep waits this long, off the busy start of a process.
SESSION_SWEEP_FIRST_SECONDS = 60.0
#: How often each process deletes the device codes that expired (at most a few a minute, each 15 minutes
#: long: a sweep every 10 minutes keeps the table to the codes of the last hour or so).
DEVICE_SWEEP_SECONDS = 600.0


@dataclass(frozen=True)
class Auth:
    parts: AuthParts
    accounts: Accounts
    email: EmailFlows
    raw_email: RawEmails
    oauth: OAuthSignIn
    devices: DeviceAuthorizations
    admin: AuthAdmin
    jwt_providers: JwtProviders

    @classmethod
    def build(cls, core: Core) -> Auth:
        parts = AuthParts.build(core)
        accounts = Accounts(parts)
        return cls(
            parts=parts,
            accounts=accounts,
            email=EmailFlows(parts, accounts),
            raw_email=RawEmails(parts),
            oauth=OAuthSignIn(parts, accounts),
            devices=DeviceAuthorizations(parts),
            admin=AuthAdmin(parts),
            jwt_providers=JwtProviders(core.database, core.external_tokens),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """On the way out, emails still on their way get a few seconds."""
        try:
            yield
        finally:
            await self.parts.mailer.drain()

    @contextlib.asynccontextmanager
    async def sweeping(self) -> AsyncIterator[None]:
        """While the server runs (its background work): expired sessions pruned a minute after start, then
        every `SESSION_SWEEP_SECONDS`; expired device codes every `DEVICE_SWEEP_SECONDS`."""
        async with (
            repeating(
                self.parts.sessions.prune_expired,
                first=SESSION_SWEEP_FIRST_SECONDS,
                every=SESSION_SWEEP_SECONDS,
                what="expired sessions",
                log=log,
            ),
            repeating(
                self.devices.prune_expired,
                first=SESSION_SWEEP_FIRST_SECONDS,
                every=DEVICE_SWEEP_SECONDS,
                what="expired device codes",
                log=log,
            ),
        ):
            yield
