"""Auth's process-wide services, built from the runtime's keys and `auth_settings` on first use."""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.auth.one_time_codes import OneTimeCodes
from kilnbase.auth.passwords import Passwords
from kilnbase.auth.sessions import SessionService
from kilnbase.auth.settings import AuthSettings
from kilnbase.server.runtime import Runtime


@dataclass(frozen=True)
class AuthServices:
    settings: AuthSettings
    passwords: Passwords
    sessions: SessionService
    codes: OneTimeCodes


def auth_services(runtime: Runtime) -> AuthServices:
    """The services for this runtime; rebuilt if a test swapped `runtime.auth_settings`."""
    settings = runtime.auth_settings
    built = runtime.auth_cache
    if not isinstance(built, AuthServices) or built.settings is not settings:
        built = AuthServices(
            settings=settings,
            passwords=Passwords(settings),
            sessions=SessionService(runtime.keys, runtime.tokens, settings),
            codes=OneTimeCodes(runtime.keys, settings),
        )
        runtime.auth_cache = built
    return built
