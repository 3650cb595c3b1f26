"""What every auth service is given, built once from the core: settings, the database, keys, the secret box,
the rate limiter, and the pieces auth builds for itself (password hashing, sessions, one-time codes, the
mailer). The services (`accounts`, `email_flows`, `oauth_flow`, `admin`) share one of these."""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.auth.mailer import Mailer
from kilnbase.auth.one_time_codes import OneTimeCodes
from kilnbase.auth.passwords import Passwords
from kilnbase.auth.sessions import SessionService
from kilnbase.capability import Core
from kilnbase.config import AuthSettings, Settings
from kilnbase.db.session import Database
from kilnbase.http.rate_limit import RateLimiter, enforce
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox


@dataclass(frozen=True)
class AuthParts:
    settings: AuthSettings
    server: Settings
    database: Database
    keys: ProjectKeys
    box: SecretBox
    limiter: RateLimiter
    passwords: Passwords
    sessions: SessionService
    codes: OneTimeCodes
    mailer: Mailer
    started_at: float

    @classmethod
    def build(cls, core: Core) -> AuthParts:
        settings = core.settings.auth
        return cls(
            settings=settings,
            server=core.settings,
            database=core.database,
            keys=core.keys,
            box=core.secret_box,
            limiter=core.rate_limiter,
            passwords=Passwords(settings),
            sessions=SessionService(core.keys, core.tokens, settings, core.database, core.ended_sessions),
            codes=OneTimeCodes(core.keys, settings),
            mailer=Mailer(core.secret_box),
            started_at=core.started_at,
        )

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def limit(self, key: str, limit: int) -> None:
        """429 once `key` passes `limit` within the auth rate-limit window, in any process."""
        await enforce(self.limiter, key, limit, self.settings.rate_limit_window_seconds)
