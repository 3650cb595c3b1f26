"""One Settings object, read from the environment.

InsForge's variable names are used where they exist (`PORT`, `DATABASE_URL`, `ACCESS_API_KEY`, ...), so an
InsForge `.env` works unchanged; Kilnbase's own settings carry the `KILNBASE_` prefix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILNBASE_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(7130, validation_alias=AliasChoices("PORT", "KILNBASE_PORT"), ge=1, le=65535)
    data_dir: Path = Path(".kilnbase")
    public_url: str | None = Field(None, validation_alias=AliasChoices("API_BASE_URL", "KILNBASE_PUBLIC_URL"))

    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "KILNBASE_DATABASE_URL")
    )
    db_pool_min: int = 2
    db_pool_max: int = 16
    #: None disables server-side prepared statements (needed behind PgBouncer < 1.21 in transaction mode).
    db_prepare_threshold: int | None = 5

    access_api_key: str | None = Field(None, validation_alias=AliasChoices("ACCESS_API_KEY"))
    access_anon_key: str | None = Field(None, validation_alias=AliasChoices("ACCESS_ANON_KEY"))
    jwt_secret: str | None = Field(None, validation_alias=AliasChoices("JWT_SECRET"))
    encryption_key: str | None = Field(None, validation_alias=AliasChoices("ENCRYPTION_KEY"))
    root_admin_username: str = Field("admin", validation_alias=AliasChoices("ROOT_ADMIN_USERNAME"))
    root_admin_password: str | None = Field(None, validation_alias=AliasChoices("ROOT_ADMIN_PASSWORD"))

    log_level: str = Field("info", validation_alias=AliasChoices("LOG_LEVEL", "KILNBASE_LOG_LEVEL"))

    # Model gateway (ai/). OpenRouter by default; its key is the last of the credential sources.
    openrouter_api_key: str | None = Field(None, validation_alias=AliasChoices("OPENROUTER_API_KEY"))
    openrouter_base_url: str = Field(
        "https://openrouter.ai/api/v1", validation_alias=AliasChoices("OPENROUTER_BASE_URL")
    )
    #: A pluggable managed key source (after BYOK, before the environment): GET it for {apiKey}.
    ai_managed_key_url: str | None = None
    ai_managed_key_token: str | None = None
    ai_managed_key_ttl: float = Field(300.0, ge=0)
    #: Quota counters in Redis instead of Postgres (shared by every process pointing at it).
    ai_redis_url: str | None = Field(
        None, validation_alias=AliasChoices("KILNBASE_AI_REDIS_URL", "REDIS_URL")
    )
    ai_max_retries: int = Field(2, ge=0, le=10)
    ai_retry_base_delay: float = Field(0.25, ge=0)
    ai_retry_max_delay: float = Field(8.0, ge=0)
    ai_connect_timeout: float = Field(10.0, gt=0)
    ai_read_timeout: float = Field(300.0, gt=0)
    ai_breaker_threshold: int = Field(5, ge=1)
    ai_breaker_cooldown: float = Field(30.0, ge=0)
    ai_catalog_ttl: float = Field(3600.0, ge=0)
    ai_policy_ttl: float = Field(2.0, ge=0)
    ai_cache_ttl: float = Field(300.0, ge=0)
    ai_cache_max_entries: int = Field(10_000, ge=0)
    ai_default_max_tokens: int = Field(4096, ge=1)
    ai_stream_keepalive: float = Field(15.0, ge=0)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.json"
