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
from kilnbase.http.errors import ApiError
from kilnbase.http.rate_limit import RateLimiter, enforce, seconds_to_wait
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox

#: InsForge's words for its per-address limits (`{window}`: the window, "15 minutes").
SEND_REFUSAL = "Too many send email verification requests from this IP. Please try again in {window}."
VERIFY_REFUSAL = "Too many verification attempts from this IP. Please try again in {window}."
ID_SIGN_IN_REFUSAL = "Too many ID token sign-in attempts from this IP. Please try again in {window}."


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

    async def limit(self, key: str, limit: int, refusal: str | None = None) -> None:
        """429 once `key` passes `limit` within the auth rate-limit window, in any process; `refusal` is
        InsForge's message for this limit, where it has one (`{window}` becomes the window, "15 minutes")."""
        window = self.settings.rate_limit_window_seconds
        try:
            await enforce(self.limiter, key, limit, window)
        except ApiError as exc:
            if refusal is None or exc.status != 429:
                raise
            minutes = max(1, round(window / 60))
            message = refusal.format(window=f"{minutes} minute{'s' if minutes != 1 else ''}")
            raise ApiError(429, exc.code, message, exc.next_actions) from None

    async def cooldown(self, key: str, seconds: float) -> None:
        """One request per `seconds` for `key` (one recipient's emails), refused in InsForge's words."""
        wait = await seconds_to_wait(self.limiter, key, 1, seconds)
        if wait is not None:
            raise ApiError(
                429,
                "TOO_MANY_REQUESTS",
                f"Please wait {wait} seconds before requesting another code for this email",
                f"Wait {wait} seconds before retrying.",
            )
