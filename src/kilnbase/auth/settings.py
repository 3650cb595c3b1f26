"""Auth's own tunables, read from `KILNBASE_AUTH_*` environment variables.

Kept apart from the server's Settings because only auth reads them, and tests swap them per module (a cheap
password-hashing profile, relaxed rate limits) by assigning `runtime.auth_settings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILNBASE_AUTH_", extra="ignore")

    #: argon2id cost. The default follows argon2-cffi (t=3, m=64 MiB, p=4, about 145 ms on 2 cores); the OWASP
    #: minimum profile (t=2, m=19 MiB, p=1) is about 36 ms.
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_cost_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)

    access_token_seconds: int = Field(default=15 * 60, ge=30)
    refresh_token_seconds: int = Field(default=7 * 24 * 3600, ge=60)

    #: InsForge's limits: 5 emails per 15 minutes per IP on the send endpoints, 10 verifications
    #: per 15 minutes.
    rate_limit_window_seconds: int = Field(default=15 * 60, ge=1)
    email_send_limit: int = Field(default=5, ge=1)
    verify_limit: int = Field(default=10, ge=1)
    id_token_limit: int = Field(default=30, ge=1)
    sign_in_limit: int = Field(default=30, ge=1)
    #: Sign-ups per client address per window (InsForge has none; behind a proxy, see trust_forwarded_for).
    sign_up_limit: int = Field(default=100, ge=1)

    #: Wrong guesses allowed on one emailed code before it is burnt.
    otp_max_attempts: int = Field(default=5, ge=1, le=100)
    code_expiry_minutes: int = Field(default=15, ge=1)
    verify_link_expiry_minutes: int = Field(default=24 * 60, ge=1)
    reset_code_expiry_minutes: int = Field(default=10, ge=1)
    reset_link_expiry_minutes: int = Field(default=60, ge=1)

    #: Endpoint overrides per built-in OAuth provider, e.g. `{"github": {"authorize_url": "...",
    #: "token_url": "...", "userinfo_url": "..."}}` for GitHub Enterprise, or a test provider.
    oauth_endpoints: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: How long an OAuth flow (provider round trip) and the one-time `insforge_code` stay valid.
    oauth_flow_seconds: int = Field(default=600, ge=30)

    #: Trust `X-Forwarded-For` for the client address (only behind a proxy you run).
    trust_forwarded_for: bool = False

    @field_validator("oauth_endpoints")
    @classmethod
    def _known_endpoints(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        allowed = {"authorize_url", "token_url", "userinfo_url", "jwks_uri", "issuer", "emails_url"}
        for provider, fields in value.items():
            unknown = set(fields) - allowed
            if unknown:
                raise ValueError(f"unknown endpoint fields for {provider}: {sorted(unknown)}")
        return value
