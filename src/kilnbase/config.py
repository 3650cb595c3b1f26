"""One Settings object, read from the environment.

InsForge's variable names are used where they exist (`PORT`, `DATABASE_URL`, `ACCESS_API_KEY`, ...), so an
InsForge `.env` works unchanged; Kilnbase's own settings carry the `KILNBASE_` prefix. Auth's tunables are a
nested object (`KILNBASE_AUTH_*`), so a test or an embedder builds the whole configuration in one value:
`Settings(database_url=..., auth=AuthSettings(argon2_time_cost=2))`.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

MIB = 1024 * 1024

#: The schemes redis-py connects with: any other URL fails when the server builds the client, after the
#: database has started, as a traceback.
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(value: str | None) -> str | None:
    if value is not None and not value.lower().startswith(_REDIS_SCHEMES):
        raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://127.0.0.1:6379/0)")
    return value


class McpSettings(BaseSettings):
    """The MCP server's own tunables, read from `KILNBASE_MCP_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_MCP_", extra="ignore")

    #: Tool calls per credential per minute (the anon key's: per client address too), counted across every
    #: process (as auth's limits are).
    tool_calls_per_minute: int = Field(default=120, ge=1, le=100_000)


class AuthSettings(BaseSettings):
    """Auth's own tunables, read from `KILNBASE_AUTH_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_AUTH_", extra="ignore")

    #: argon2id cost. The default follows argon2-cffi (t=3, m=64 MiB, p=4, about 145 ms on 2 cores); the OWASP
    #: minimum profile (t=2, m=19 MiB, p=1) is about 36 ms.
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_cost_kib: int = Field(default=65536, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)

    @model_validator(mode="after")
    def _argon2_memory_fits_its_lanes(self) -> AuthSettings:
        """argon2 needs 8 KiB of memory per lane: with less, every hash fails (sign-ups would be 500s) while
        the dummy verify of an unknown email fails at once, and its speed would tell which emails exist."""
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError(
                f"KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB must be at least 8 x KILNBASE_AUTH_ARGON2_PARALLELISM "
                f"({8 * self.argon2_parallelism})"
            )
        return self

    access_token_seconds: int = Field(default=15 * 60, ge=30)
    refresh_token_seconds: int = Field(default=7 * 24 * 3600, ge=60)

    #: InsForge's limits: 5 emails per 15 minutes per IP on the send endpoints, 10 verifications
    #: per 15 minutes. Every limit is counted across all the project's processes (`http/rate_limit.py`).
    rate_limit_window_seconds: int = Field(default=15 * 60, ge=1)
    email_send_limit: int = Field(default=5, ge=1)
    verify_limit: int = Field(default=10, ge=1)
    id_token_limit: int = Field(default=30, ge=1)
    #: Password sign-ins per (client address, email) per window: guessing one account's password.
    sign_in_limit: int = Field(default=10, ge=1)
    #: Password sign-ins per client address per window, whatever the email: spraying many accounts.
    sign_in_ip_limit: int = Field(default=30, ge=1)
    #: OAuth starts, callbacks and code exchanges per client address per window (three per sign-in).
    oauth_limit: int = Field(default=60, ge=1)
    #: Sign-ups per client address per window (InsForge has none; behind a proxy, see `trusted_proxies`).
    sign_up_limit: int = Field(default=100, ge=1)
    #: Device authorizations started per client address per window (InsForge's 5 per 15 minutes).
    device_authorization_limit: int = Field(default=5, ge=1)
    #: User codes looked up, approved or denied per client address per window, together (InsForge's 10 per
    #: 15 minutes): what keeps a short user code from being guessed.
    device_user_code_limit: int = Field(default=10, ge=1)
    #: Device polls per client address per window, whatever the device code (one device polling every 5
    #: seconds for the 15 minutes of its code makes 180): bounds a client spraying device codes.
    device_poll_ip_limit: int = Field(default=600, ge=1)

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
    #: The clock skew allowed when checking an external JWT provider's token (`exp`, `nbf`, `iat`), as OIDC
    #: libraries allow: a provider's clock a little ahead or behind is not a refusal.
    jwt_provider_leeway_seconds: int = Field(default=30, ge=0, le=300)

    @field_validator("oauth_endpoints")
    @classmethod
    def _known_endpoints(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        allowed = {"authorize_url", "token_url", "userinfo_url", "jwks_uri", "issuer", "emails_url"}
        for provider, fields in value.items():
            unknown = set(fields) - allowed
            if unknown:
                raise ValueError(f"unknown endpoint fields for {provider}: {sorted(unknown)}")
        return value


class StorageSettings(BaseSettings):
    """Storage's settings, under InsForge's names where it has them (`STORAGE_DIR`, `MAX_FILE_SIZE`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_STORAGE_", extra="ignore", populate_by_name=True)

    #: Where the local backend keeps object bytes; `<data dir>/storage` when unset.
    dir: Path | None = Field(None, validation_alias=AliasChoices("STORAGE_DIR", "KILNBASE_STORAGE_DIR"))
    #: The largest object in bytes, unless an admin set `maxFileSizeMb` (`PUT /api/storage/config`);
    #: 50 MB when unset, as in InsForge.
    max_file_size: int | None = Field(
        None, ge=1, validation_alias=AliasChoices("MAX_FILE_SIZE", "KILNBASE_STORAGE_MAX_FILE_SIZE")
    )
    #: Sync each object's bytes to disk before its row commits (local backend), so a committed object
    #: survives a power loss too, not only a crash of the process. Off trades that for write speed.
    fsync: bool = True
    #: An S3-compatible store for object bytes instead of the local disk (InsForge's names).
    s3_bucket: str | None = Field(
        None, validation_alias=AliasChoices("S3_BUCKET", "KILNBASE_STORAGE_S3_BUCKET")
    )
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("S3_ENDPOINT_URL", "KILNBASE_STORAGE_S3_ENDPOINT_URL")
    )
    s3_region: str = Field(
        "us-east-2", validation_alias=AliasChoices("S3_REGION", "KILNBASE_STORAGE_S3_REGION")
    )
    s3_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("S3_ACCESS_KEY_ID", "KILNBASE_STORAGE_S3_ACCESS_KEY_ID")
    )
    s3_secret_access_key: str | None = Field(
        None, validation_alias=AliasChoices("S3_SECRET_ACCESS_KEY", "KILNBASE_STORAGE_S3_SECRET_ACCESS_KEY")
    )
    s3_force_path_style: bool = Field(
        True, validation_alias=AliasChoices("S3_FORCE_PATH_STYLE", "KILNBASE_STORAGE_S3_FORCE_PATH_STYLE")
    )
    #: Presigned mode (the default): clients download from and upload to the store directly. False is proxy
    #: mode: every byte goes through Kilnbase.
    s3_use_presigned_urls: bool = Field(
        True, validation_alias=AliasChoices("S3_USE_PRESIGNED_URLS", "KILNBASE_STORAGE_S3_USE_PRESIGNED_URLS")
    )
    #: The largest object the S3 protocol endpoint accepts (one PUT, or all parts of a multipart upload).
    s3_max_object_size: int = Field(
        5 * 1024**3,
        ge=1,
        validation_alias=AliasChoices("S3_MAX_OBJECT_SIZE_BYTES", "KILNBASE_STORAGE_S3_MAX_OBJECT_SIZE"),
    )
    #: Prefix of every blob's name in the S3 bucket (InsForge's `APP_KEY`), so projects can share a bucket.
    s3_prefix: str = Field("", validation_alias=AliasChoices("APP_KEY", "KILNBASE_STORAGE_S3_PREFIX"))


class MetadataSettings(BaseSettings):
    """The semantic layer's settings (`/api/metadata`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_METADATA_", extra="ignore", populate_by_name=True)

    #: What `GET /api/metadata/project-id` answers (InsForge's `PROJECT_ID`); null when unset.
    project_id: str | None = Field(
        None, validation_alias=AliasChoices("PROJECT_ID", "KILNBASE_METADATA_PROJECT_ID")
    )


class LogsSettings(BaseSettings):
    """The request log kept for `GET /api/logs/insforge.logs` (`KILNBASE_LOGS_*`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_LOGS_", extra="ignore")

    #: Request log lines kept in the database (the oldest are dropped past it); 0 keeps none.
    request_log_rows: int = Field(default=20_000, ge=0, le=10_000_000)
    #: Seconds between two writes of the lines gathered in memory.
    request_log_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Lines held in memory between two writes, at most (more are dropped and counted).
    request_log_buffer: int = Field(default=10_000, ge=1, le=1_000_000)


class RecordsSettings(BaseSettings):
    """PostgREST's opt-in features of the records API, off by default as in PostgREST, and its row limit,
    read from `KILNBASE_DB_*` (PostgREST's `db-aggregates-enabled`, `db-plan-enabled`, `db-tx-end`,
    `db-max-rows`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_DB_", extra="ignore")

    #: `count()`, `sum()`, `avg()`, `min()`, `max()` in `select=` (else 400 PGRST123).
    aggregates_enabled: bool = False
    #: `Accept: application/vnd.pgrst.plan+json|+text`: the statement's EXPLAIN (else 406).
    plan_enabled: bool = False
    #: How a request's transaction ends; the `-allow-override` ones honour `Prefer: tx=commit|rollback`.
    tx_end: Literal["commit", "commit-allow-override", "rollback", "rollback-allow-override"] = "commit"
    #: PostgREST's `db-max-rows`: the most rows a read (or a set-returning call) answers with, whatever
    #: `limit` or `Range` asks; `Content-Range` says a page was cut. None (the default), as in PostgREST
    #: and InsForge, which set none: a client written for InsForge that reads 1,500 rows without paging
    #: gets 1,500, not a silently shorter page. Set it (Supabase sets 1000) where a large table is open to
    #: the anon key: one request then cannot make the server build the whole table as one response.
    max_rows: int | None = Field(default=None, ge=1)


def deno_net_entry(entry: str) -> str:
    """`entry` if Deno takes it as a `--deny-net` host: an IPv4 address or CIDR range, an IPv6 address in
    brackets (Deno takes no IPv6 range), or a name; each with an optional `:port`. Else ValueError saying
    how to write it."""
    host, port = entry, None
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        host += "]"
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: an IPv6 address goes in brackets, then an optional :port")
            port = rest[1:]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{entry!r}: an IPv6 address goes in brackets, no range: [fd00::1]") from None
    elif ":" in host and "/" in host:
        raise ValueError(f"{entry!r}: Deno takes no IPv6 range; list addresses in brackets: [fd00::1]")
    elif ":" in host:
        raise ValueError(f"{entry!r}: write an IPv6 address in brackets: [{host}]")
    elif "/" in host:
        try:
            ipaddress.IPv4Network(host, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r}: a range must be IPv4 CIDR, such as 10.0.0.0/8") from None
    elif not host or not all(char.isalnum() or char in "-." for char in host):
        raise ValueError(f"{entry!r}: not an address, a range or a host name")
    return entry


class FunctionsSettings(BaseSettings):
    """Edge functions' own tunables, read from `KILNBASE_FUNCTIONS_*` (and InsForge's `WORKER_TIMEOUT_MS`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_FUNCTIONS_", extra="ignore", populate_by_name=True)

    #: Per-invocation time limit until the response starts, and between two chunks of a streamed one (504).
    timeout_ms: int = Field(
        60_000, validation_alias=AliasChoices("WORKER_TIMEOUT_MS", "KILNBASE_FUNCTIONS_TIMEOUT_MS"), ge=100
    )
    #: Warm Deno processes per active function (each one event loop; invocations are spread over them).
    workers_per_function: int = Field(default=2, ge=1, le=32)
    #: Invocations of one function in flight at once in one API process; past it, 429.
    max_concurrency: int = Field(default=64, ge=1)
    #: V8 old-space cap per worker process, in MiB (a worker past it dies; its request gets a 502).
    memory_mb: int = Field(default=128, ge=16, le=8192)
    #: The largest function source accepted (413 beyond it).
    max_code_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: `deno check` before a function becomes active: its time limit.
    check_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Wrap workers in bubblewrap (namespaces, only the needed paths visible) when the kernel allows it.
    sandbox: bool = True
    #: How long a worker may take to start (load its code and imports).
    start_timeout_seconds: float = Field(default=30.0, gt=0)
    #: A function not invoked for this long gives its workers back (0: never); the next call starts them.
    idle_seconds: float = Field(default=600.0, ge=0)
    #: The functions host's port: shared functions served directly, as `createClient({ functionsUrl })`
    #: calls them (0: no host). On the API's host address.
    host_port: int = Field(default=7133, ge=0, le=65535)
    #: The host's V8 old-space cap, in MiB (it holds every function it serves).
    host_memory_mb: int = Field(default=512, ge=64, le=16384)
    #: A host that does not answer for this long (an infinite loop) is restarted.
    host_stall_seconds: float = Field(default=5.0, gt=0)
    #: Invocation lines logged per function per second by the host; past it, one summary line a second.
    host_log_per_second: int = Field(default=100, ge=0)
    #: The host is replaced by a fresh process (no invocation dropped) once it holds this many function
    #: versions that were replaced or removed: a module cannot be unloaded (0: never for this reason).
    host_recycle_versions: int = Field(default=100, ge=0)
    #: ... or once its resident memory passes this many MiB while it holds at least one such version
    #: (unset: three quarters of `host_memory_mb`; 0: never for this reason).
    host_recycle_memory_mb: int | None = Field(default=None, ge=0)
    #: Addresses functions may not reach, besides the cloud metadata service and Kilnbase's own Postgres and
    #: Redis (always denied, see functions/egress.py): Deno `--deny-net` entries, comma-separated in the
    #: environment (`10.0.0.0/8,127.0.0.0/8:3306,[fd00::1],internal.example.com:443`).
    deny_net: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("deny_net", mode="before")
    @classmethod
    def _deny_net(cls, value: Any) -> Any:
        parts = value.split(",") if isinstance(value, str) else value
        return tuple(deno_net_entry(str(part).strip()) for part in parts if str(part).strip())

    @property
    def drain_seconds(self) -> float:
        """How long invocations in flight may take to finish when what runs them is replaced."""
        return self.timeout_ms / 1000 + 5

    @property
    def host_recycle_memory_bytes(self) -> int:
        """The resident memory past which the host is replaced (0: never)."""
        mib = self.host_recycle_memory_mb
        return (self.host_memory_mb * 3 // 4 if mib is None else mib) * 1024 * 1024


class RealtimeSettings(BaseSettings):
    """Realtime's own tunables, read from `KILNBASE_REALTIME_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_REALTIME_", extra="ignore", populate_by_name=True)

    #: Rooms and presence shared by every process through Redis (messages reach every process anyway).
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("KILNBASE_REALTIME_REDIS_URL", "REDIS_URL")
    )
    _redis_url = field_validator("redis_url")(_redis_url)

    #: Channels one connection may be subscribed to at once.
    max_subscriptions: int = Field(default=100, ge=1)
    #: Client events (subscribe, publish, ...) per connection per second, with bursts up to `event_burst`.
    events_per_second: float = Field(default=50.0, gt=0)
    event_burst: int = Field(default=100, ge=1)
    #: A published payload, as JSON; larger ones are refused with `realtime:error`.
    max_payload_bytes: int = Field(default=64 * 1024, ge=256)
    #: Webhook deliveries: attempts per URL (network errors and 5xx are retried), the first retry's delay
    #: (doubling after), and each attempt's timeout.
    webhook_attempts: int = Field(default=3, ge=1, le=10)
    webhook_retry_delay: float = Field(default=1.0, ge=0)
    webhook_timeout: float = Field(default=10.0, gt=0)
    #: How often the retention sweep runs.
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    #: Change events: how long the replication slot outlives its last subscriber (clients that reconnect
    #: within it, after a restart say, get what changed meanwhile), and how often it is read when idle.
    changes_idle_seconds: float = Field(default=300.0, ge=0)
    changes_poll_seconds: float = Field(default=0.05, gt=0)
    #: How often connections are checked for a session that has ended (signed out, revoked).
    session_check_seconds: float = Field(default=2.0, gt=0)


class SchedulesSettings(BaseSettings):
    """Schedules' own tunables (`KILNBASE_SCHEDULES_*`): the time limits of one scheduled HTTP call (InsForge:
    5 minutes in all, 5 s to connect), and how often job logs past their retention are deleted."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_SCHEDULES_", extra="ignore")

    #: A scheduled call's whole time limit (a slower target is logged as failed).
    request_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    #: ... and its time limit to connect.
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    #: How often each process deletes job logs older than the configured retention.
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)


class DatabaseWebhooksSettings(BaseSettings):
    """Database webhooks' own tunables (`KILNBASE_DATABASE_WEBHOOKS_*`): the time limits of one delivery, how
    often a failed one is tried again, and how long delivery logs are kept."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_DATABASE_WEBHOOKS_", extra="ignore")

    #: A delivery attempt's whole time limit (a slower receiver is logged as failed, and tried again).
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: ... and its time limit to connect.
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    #: Attempts per event, the first included (network errors, timeouts, 408, 429 and 5xx are tried again).
    max_attempts: int = Field(default=8, ge=1, le=30)
    #: The pause before the first retry; each later one doubles it, up to `max_retry_delay_seconds`.
    retry_delay_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_retry_delay_seconds: float = Field(default=600.0, ge=0, le=86400)
    #: How long delivery logs are kept.
    log_retention_days: int = Field(default=7, ge=1, le=3650)
    #: How often each process deletes delivery logs older than that.
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)


class MessagingSettings(BaseSettings):
    """The messaging outbox's tunables (`KILNBASE_MESSAGING_*`): how often a message is tried before it goes
    to the dead-letter table, the pause between tries, how long a worker holds a message it is sending, and
    how long sent messages and dead letters are kept."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_MESSAGING_", extra="ignore")

    #: Attempts per message, the first included (InsForge's `maxRetryAttempts`): a message whose attempts
    #: reach it moves to the dead-letter table.
    max_retries: int = Field(default=5, ge=1, le=50)
    #: The pause after the first failed attempt; each later one doubles it, up to `max_backoff_seconds`.
    backoff_base_seconds: float = Field(default=5.0, ge=0, le=3600)
    max_backoff_seconds: float = Field(default=3600.0, ge=0, le=86400)
    #: How long a worker holds a claimed message (renewed every half of it while it sends); a worker that
    #: stops holding it (it crashed) loses it once the lease has run out, and another worker tries again.
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    #: The longest the worker sleeps without looking at the outbox (a NOTIFY wakes it sooner): it finds
    #: rows that arrived without one.
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: How long sent messages and the attempts of every message are kept.
    retention_days: int = Field(default=7, ge=1, le=3650)
    #: How long a dead letter is kept after it moved to the dead-letter table, for a person to look at and
    #: retry: longer than `retention_days`, since a dead one waits for someone and a sent one does not.
    dead_letter_retention_days: int = Field(default=30, ge=1, le=3650)
    #: How often each process deletes what is older than these.
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _backoff_in_order(self) -> MessagingSettings:
        if self.max_backoff_seconds < self.backoff_base_seconds:
            raise ValueError("max_backoff_seconds must be at least backoff_base_seconds")
        return self


class AdvisorSettings(BaseSettings):
    """The advisor's own tunables (`KILNBASE_ADVISOR_*`): how long a transaction may sit idle, or a query run,
    before a scan reports it (InsForge: 5 minutes), and the time limit of each of a scan's queries (InsForge:
    15 s)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_ADVISOR_", extra="ignore")

    #: A session idle in a transaction, or a query running, longer than this is reported.
    activity_threshold_seconds: float = Field(default=300.0, gt=0, le=86400)
    #: Each rule's query is cancelled past this (the rule is then reported as failed).
    statement_timeout_seconds: float = Field(default=15.0, gt=0, le=600)


class KvSettings(BaseSettings):
    """The key-value store's bounds (`KILNBASE_KV_*`)."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_KV_", extra="ignore")

    #: Live entries one signed-in user may hold (the project's own entries, the API key's, are not counted):
    #: without a bound, one account could fill the database with values that never expire.
    max_user_entries: int = Field(default=10_000, ge=1, le=10_000_000)


class MemorySettings(BaseSettings):
    """Agent memory's models (`KILNBASE_MEMORY_*`), InsForge's by default, called through the model gateway
    (so its credentials, policy, limits and usage ledger apply). The embedding model must answer 1536
    dimensions (or take `dimensions`): that is what `memory.memories` stores."""

    model_config = SettingsConfigDict(env_prefix="KILNBASE_MEMORY_", extra="ignore")

    #: Embeds what is remembered and what is recalled.
    embedding_model: str = Field(default="openai/text-embedding-3-small", min_length=1, max_length=200)
    #: Extracts memories from a transcript, and decides ADD, UPDATE or NOOP against near-duplicates.
    chat_model: str = Field(default="openai/gpt-4o-mini", min_length=1, max_length=200)


#: Postgres's form of a `statement_timeout`: a number (milliseconds) or a number and a unit.
_STATEMENT_TIMEOUT = re.compile(r"\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*")

#: The log levels `KILNBASE_LOG_LEVEL` takes.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


#: A URL's characters: printable, no spaces (which would end it in an email or a header).
_URL_TEXT = re.compile(r"[^\s\x00-\x1f\x7f]+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILNBASE_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(7130, validation_alias=AliasChoices("PORT", "KILNBASE_PORT"), ge=1, le=65535)
    data_dir: Path = Path(".kilnbase")
    public_url: str | None = Field(None, validation_alias=AliasChoices("API_BASE_URL", "KILNBASE_PUBLIC_URL"))
    #: Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges, comma-separated in the
    #: environment). Empty by default: the client address is the peer's, whatever headers say.
    trusted_proxies: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode] = ()

    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "KILNBASE_DATABASE_URL")
    )
    #: Connections per process for requests (logged in as the authenticator role).
    db_pool_min: int = Field(2, ge=0)
    db_pool_max: int = Field(16, ge=1)
    #: Connections per process for Kilnbase's own work (the owner: auth, gateway, schema cache, audit).
    db_owner_pool_min: int = Field(1, ge=0)
    db_owner_pool_max: int = Field(8, ge=1)
    #: None disables server-side prepared statements (needed behind PgBouncer < 1.21 in transaction mode).
    db_prepare_threshold: int | None = 5
    #: The password of the authenticator login role, when an operator created that role (see
    #: docs/security.md); by default Kilnbase derives it and sets it itself.
    db_authenticator_password: str | None = None
    #: Statement timeouts per request role (Postgres interval syntax).
    db_anon_statement_timeout: str = "3s"
    db_authenticated_statement_timeout: str = "8s"
    db_admin_statement_timeout: str = "30s"
    #: `GET /api/database/browse/{table}`: the most rows a page holds (a larger `limit` is clamped, as
    #: InsForge clamps it), and the largest cell answered as it is; a larger one is answered as
    #: `{"__GuardedValue": true, ...}`, so a page of 1,000 rows stays a few MB at most for a narrow table.
    db_browse_max_rows: int = Field(1000, ge=1, le=100_000)
    db_browse_cell_max_bytes: int = Field(4096, ge=64, le=16 * MIB)
    #: The most backups one agent key may keep (`/api/database/backups`): it makes one without a person, and
    #: each is a full copy of the database on disk, while deleting one waits for a person's approval.
    backups_agent_max: int = Field(10, ge=0, le=1000)
    #: The key version new values of encrypted columns are written with (`/api/database/encryption`). Each
    #: version's key is derived from the project's encryption key (`keys/column_cipher.py`); raise it, restart
    #: every process, then `POST /api/database/encryption/rotate` re-encrypts the values of older versions.
    column_key_version: int = Field(1, ge=1, le=1_000_000)

    #: Request body limits, enforced while the body streams in (413 beyond them).
    max_json_body_bytes: int = Field(10 * MIB, ge=1024)
    max_gateway_body_bytes: int = Field(20 * MIB, ge=1024)
    max_upload_body_bytes: int = Field(100 * MIB, ge=1024)
    #: The request line and headers together (431 beyond it).
    max_header_bytes: int = Field(32 * 1024, ge=4096)

    access_api_key: str | None = Field(None, validation_alias=AliasChoices("ACCESS_API_KEY"))
    access_anon_key: str | None = Field(None, validation_alias=AliasChoices("ACCESS_ANON_KEY"))
    jwt_secret: str | None = Field(None, validation_alias=AliasChoices("JWT_SECRET"))
    encryption_key: str | None = Field(None, validation_alias=AliasChoices("ENCRYPTION_KEY"))
    root_admin_username: str = Field("admin", validation_alias=AliasChoices("ROOT_ADMIN_USERNAME"))
    root_admin_password: str | None = Field(None, validation_alias=AliasChoices("ROOT_ADMIN_PASSWORD"))

    #: Rate-limit counters in Redis (shared by every process pointing at it) instead of Postgres.
    rate_limit_redis_url: str | None = Field(
        None, validation_alias=AliasChoices("KILNBASE_RATE_LIMIT_REDIS_URL", "REDIS_URL")
    )

    log_level: str = Field("info", validation_alias=AliasChoices("LOG_LEVEL", "KILNBASE_LOG_LEVEL"))

    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    records: RecordsSettings = Field(default_factory=RecordsSettings)
    functions: FunctionsSettings = Field(default_factory=FunctionsSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    schedules: SchedulesSettings = Field(default_factory=SchedulesSettings)
    database_webhooks: DatabaseWebhooksSettings = Field(default_factory=DatabaseWebhooksSettings)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    advisor: AdvisorSettings = Field(default_factory=AdvisorSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    kv: KvSettings = Field(default_factory=KvSettings)

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

    # Payments (payments/): Stripe's API, over HTTPS (a loopback stand-in in tests).
    stripe_api_base: str = Field("https://api.stripe.com", min_length=1)
    #: How old a webhook's `Stripe-Signature` timestamp may be (Stripe's libraries use 300 s).
    stripe_webhook_tolerance_seconds: int = Field(300, ge=1, le=86_400)
    stripe_timeout_seconds: float = Field(30.0, gt=0, le=300)
    #: Razorpay's API (`/v1/orders`, `/v1/plans`, ...), over HTTPS (a loopback stand-in in tests).
    razorpay_api_base: str = Field("https://api.razorpay.com", min_length=1)
    razorpay_timeout_seconds: float = Field(30.0, gt=0, le=300)
    #: Checkout and portal sessions one caller (a user, else a client address) may start a minute: each
    #: one is a call to Stripe on the project's account, and the anon key starts them too.
    payments_sessions_per_minute: int = Field(30, ge=1, le=100_000)

    _redis_urls = field_validator("rate_limit_redis_url", "ai_redis_url")(_redis_url)

    @field_validator(
        "db_anon_statement_timeout", "db_authenticated_statement_timeout", "db_admin_statement_timeout"
    )
    @classmethod
    def _statement_timeout(cls, value: str) -> str:
        """A value Postgres's `statement_timeout` takes: any other is refused by `set_config` in the first
        statement of every request of that role, which then fails, while the server looks healthy."""
        if not _STATEMENT_TIMEOUT.fullmatch(value):
            raise ValueError("must be a duration such as 3s, 500ms, 2min or 0 (no limit)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        """The URL every link Kilnbase hands out starts with (emails, OAuth redirects, storage and function
        URLs): anything but an absolute http(s) URL with a host would make each of them broken, far from
        here. A path is kept (a proxy may serve Kilnbase under one); credentials, a query or a fragment
        would be copied into every link, and are refused."""
        if value is None:
            return None
        parsed = urlsplit(value)
        try:
            parsed.port  # noqa: B018 (reading it checks it)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname or not _URL_TEXT.fullmatch(value):
            raise ValueError("must be an absolute http(s) URL with a host, such as https://api.example.com")
        if parsed.username is not None or parsed.query or parsed.fragment or "#" in value or "?" in value:
            raise ValueError("must hold no user name, password, query or fragment: scheme, host, port, path")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        """A level Python's logging knows: any other name fails where logging is configured, as a
        traceback."""
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(level.lower() for level in _LOG_LEVELS)}")
        return value

    @model_validator(mode="after")
    def _pools_in_order(self) -> Settings:
        """A pool's least size may not pass its greatest: psycopg-pool refuses such a pool only once the
        database has started."""
        for least, greatest in (("db_pool_min", "db_pool_max"), ("db_owner_pool_min", "db_owner_pool_max")):
            if getattr(self, least) > getattr(self, greatest):
                raise ValueError(f"KILNBASE_{least.upper()} must be at most KILNBASE_{greatest.upper()}")
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        """A comma-separated string (the environment's form) or a sequence; each entry an address or CIDR."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in value)

    @property
    def local_host(self) -> str:
        """The address a client on this machine dials: loopback when the server listens on every
        interface."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def local_url_host(self) -> str:
        """`local_host` as a URL writes it: an IPv6 address (`--host ::1`) in brackets, or its colons would be
        read as the port's."""
        return f"[{self.local_host}]" if ":" in self.local_host else self.local_host

    @property
    def local_url(self) -> str:
        """The server's URL for a client on this machine (the functions host, the schedules runner)."""
        return f"http://{self.local_url_host}:{self.port}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return self.local_url

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.json"

    @property
    def local_storage_dir(self) -> Path:
        """Where the local storage backend keeps object bytes (and uploads under way, on either backend)."""
        return self.storage.dir or self.data_dir / "storage"


def settings_problems(error: ValidationError) -> list[str]:
    """What is wrong with the settings, a line each, named by environment variable (as a person sets them)
    and without the values given, which may be secrets."""
    model = globals().get(error.title)
    prefix = ""
    if isinstance(model, type) and issubclass(model, BaseSettings):
        prefix = str(model.model_config.get("env_prefix", ""))
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        field = "_".join(str(part) for part in problem["loc"]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        name = _aliases_set(model, field) or f"{prefix}{field}"
        lines.append(f"{name}: {message}" if field else message)
    return lines


def settings_source_problem(error: SettingsError) -> str:
    """What is wrong when a setting that takes JSON (`KILNBASE_AUTH`, `KILNBASE_AUTH_OAUTH_ENDPOINTS`, ...)
    holds something else: pydantic-settings names the field only, so the variables set for it are found by
    name. Without the value, which may hold secrets."""
    match = re.search(r'field "([^"]+)"', str(error))
    field = match.group(1).upper() if match else ""
    known = known_variables()
    names = sorted(name for name in os.environ if name.upper() in known and name.upper().endswith(field))
    named = " / ".join(names) if field and names else "A setting that takes JSON"
    return f"{named}: is not valid JSON (this setting takes a JSON value)"


def _aliases_set(model: Any, field: str) -> str | None:
    """For a field read under several names (`PORT` or `KILNBASE_PORT`), the ones set in the environment:
    pydantic reports the first name, which may not be the one the person set."""
    if not isinstance(model, type) or not issubclass(model, BaseSettings):
        return None
    environment = {name.upper() for name in os.environ}
    for info in model.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [str(choice).upper() for choice in alias.choices if isinstance(choice, str)]
            if field in names:
                return " / ".join(name for name in names if name in environment) or None
    return None


_PREFIX = "KILNBASE_"
#: `KILNBASE_*` variables read outside the settings models: the CLI's credentials (typer reads them), and what
#: `kilnbase serve --workers N` hands its workers.
_READ_ELSEWHERE = frozenset(
    {
        "KILNBASE_API_KEY",
        "KILNBASE_REPLAY_KEY",
        "KILNBASE_SUPERVISED_CONNINFO",
        "KILNBASE_SUPERVISED_READY_DIR",
    }
)
_SETTINGS_MODELS: tuple[type[BaseSettings], ...] = (
    Settings,
    McpSettings,
    AuthSettings,
    StorageSettings,
    MetadataSettings,
    LogsSettings,
    RecordsSettings,
    FunctionsSettings,
    RealtimeSettings,
    SchedulesSettings,
    DatabaseWebhooksSettings,
    MessagingSettings,
    AdvisorSettings,
    MemorySettings,
    KvSettings,
)


def known_variables() -> frozenset[str]:
    """Every environment variable Kilnbase reads: each setting's name (its prefix and field, or the names it
    is read under), and the few read elsewhere."""
    names = set(_READ_ELSEWHERE)
    for model in _SETTINGS_MODELS:
        prefix = str(model.model_config.get("env_prefix", ""))
        for field_name, info in model.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
            else:
                names.add(f"{prefix}{field_name}".upper())
    return frozenset(names)


def unknown_variables(environment: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The `KILNBASE_*` variables set that Kilnbase does not read (a typo is otherwise ignored without a word:
    the default silently stays), each with the known name closest to it, if one is close."""
    known = known_variables()
    # Compared without the prefix every one of them shares (which would make any two look alike).
    by_rest = {name.removeprefix(_PREFIX): name for name in known if name.startswith(_PREFIX)}
    unknown = []
    for name in sorted(environment):
        upper = name.upper()
        if upper.startswith(_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper.removeprefix(_PREFIX), by_rest, n=1, cutoff=0.75)
            unknown.append((name, by_rest[close[0]] if close else None))
    return unknown
