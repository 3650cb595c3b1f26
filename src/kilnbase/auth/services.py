"""What auth's routes are given: the process-wide auth services and the parts of the core auth reads.

Built once at startup from the core (`Auth.build`); tests choose auth's tunables through
`Settings(auth=AuthSettings(...))`, never by swapping fields on a live object.
"""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.auth.one_time_codes import OneTimeCodes
from kilnbase.auth.passwords import Passwords
from kilnbase.auth.sessions import SessionService
from kilnbase.capability import Core
from kilnbase.config import AuthSettings, Settings
from kilnbase.db.session import Database
from kilnbase.http.rate_limit import RateLimiter
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox


@dataclass(frozen=True)
class AuthServices:
    settings: AuthSettings
    passwords: Passwords
    sessions: SessionService
    codes: OneTimeCodes


@dataclass(frozen=True)
class Auth:
    server: Settings
    keys: ProjectKeys
    database: Database
    secret_box: SecretBox
    rate_limiter: RateLimiter
    started_at: float
    services: AuthServices

    @classmethod
    def build(cls, core: Core) -> Auth:
        settings = core.settings.auth
        return cls(
            server=core.settings,
            keys=core.keys,
            database=core.database,
            secret_box=core.secret_box,
            rate_limiter=core.rate_limiter,
            started_at=core.started_at,
            services=AuthServices(
                settings=settings,
                passwords=Passwords(settings),
                sessions=SessionService(core.keys, core.tokens, settings),
                codes=OneTimeCodes(core.keys, settings),
            ),
        )
