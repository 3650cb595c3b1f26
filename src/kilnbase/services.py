"""Everything a running server holds, built once at startup, in one place: the core every capability is
given, and each capability's service. Immutable, with no optional fields; a test builds its own from its own
settings. The HTTP app, the MCP server and the CLI call these same services."""

from __future__ import annotations

from dataclasses import dataclass

from kilnbase.advisor.service import Advisor
from kilnbase.agent_docs.service import AgentDocs
from kilnbase.agents.service import Agents
from kilnbase.ai.model_calls import ModelCalls
from kilnbase.ai.service import AiService
from kilnbase.auth.services import Auth
from kilnbase.capability import Core
from kilnbase.config import Settings
from kilnbase.database.admin import DatabaseAdmin
from kilnbase.database_backups.scheduler import ScheduledBackups
from kilnbase.database_backups.service import DatabaseBackups
from kilnbase.database_encryption.service import ColumnEncryption
from kilnbase.database_webhooks.runner import DeliveryRunner
from kilnbase.database_webhooks.service import DatabaseWebhooks
from kilnbase.db.pool import catalog_only, create_database
from kilnbase.db.roles import request_conninfo
from kilnbase.db.schema_cache import SchemaCache
from kilnbase.db.session import Database
from kilnbase.functions.runtime import Runtime
from kilnbase.functions.service import FunctionsService
from kilnbase.http.rate_limit import PostgresRateLimiter, RateLimiter, RedisRateLimiter, redis_prefix
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.identity.external_tokens import ExternalTokens
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.column_cipher import ColumnCipher
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.keys.secret_box import SecretBox
from kilnbase.kv.service import KvStore
from kilnbase.logs.service import LogsService
from kilnbase.memory.service import Memory
from kilnbase.messaging.runner import MessageRunner
from kilnbase.messaging.service import Messaging
from kilnbase.metadata.service import MetadataService
from kilnbase.payments.service import Payments
from kilnbase.project_config.service import ProjectConfig
from kilnbase.realtime.service import RealtimeService
from kilnbase.records.service import RecordsEngine
from kilnbase.schedules.reach import Reach
from kilnbase.schedules.runner import ScheduleRunner
from kilnbase.schedules.service import Schedules
from kilnbase.secrets.project_key_rotation import KeyRotation
from kilnbase.secrets.project_secrets import ProjectSecrets
from kilnbase.server.live_backups import LiveBackups
from kilnbase.storage.service import StorageService


@dataclass(frozen=True)
class Services:
    core: Core
    auth: Auth
    records: RecordsEngine
    database: DatabaseAdmin
    key_rotation: KeyRotation
    secrets: ProjectSecrets
    ai: AiService
    storage: StorageService
    metadata: MetadataService
    logs: LogsService
    docs: AgentDocs
    agents: Agents
    functions: FunctionsService
    realtime: RealtimeService
    schedules: Schedules
    schedule_runner: ScheduleRunner
    database_encryption: ColumnEncryption
    database_webhooks: DatabaseWebhooks
    webhook_runner: DeliveryRunner
    messaging: Messaging
    message_runner: MessageRunner
    advisor: Advisor
    memory: Memory
    kv: KvStore
    database_backups: DatabaseBackups
    backup_scheduler: ScheduledBackups
    project_config: ProjectConfig
    payments: Payments


def build_core(settings: Settings, keys: ProjectKeys, owner_conninfo: str) -> Core:
    """The core, its pools created but not yet opened (`Core.running` opens them). The owner's connections
    resolve names in `pg_catalog` alone (`catalog_only` says why); requests keep Postgres's search path."""
    requests = request_conninfo(settings, keys, owner_conninfo)
    owner_conninfo = catalog_only(owner_conninfo)
    database = create_database(settings, owner_conninfo, requests)
    return Core(
        settings=settings,
        keys=keys,
        tokens=TokenService(keys),
        secret_box=SecretBox(keys.encryption_key),
        column_cipher=ColumnCipher(keys.encryption_key, settings.column_key_version),
        database=database,
        schema_cache=SchemaCache(database.owner_pool),
        rate_limiter=rate_limiter(settings, keys, database),
        ended_sessions=EndedSessions(owner_conninfo, settings.auth.access_token_seconds),
        agent_keys=AgentKeys(owner_conninfo),
        external_tokens=ExternalTokens(owner_conninfo, settings.auth.jwt_provider_leeway_seconds),
    )


def rate_limiter(settings: Settings, keys: ProjectKeys, database: Database) -> RateLimiter:
    """Counters shared by every process: in Redis when one is configured (in Postgres while it cannot be
    reached), else in the project's Postgres."""
    in_postgres = PostgresRateLimiter(database)
    if settings.rate_limit_redis_url is None:
        return in_postgres
    return RedisRateLimiter(settings.rate_limit_redis_url, redis_prefix(keys.jwt_secret), in_postgres)


def build_services(core: Core) -> Services:
    secrets = ProjectSecrets(core.database, core.secret_box)
    runtime = Runtime(
        core.settings,
        core.database,
        str(core.database.owner_pool.conninfo),
        secrets.values,
        lambda: core.keys.ring.current("anon_key"),
    )
    reach = Reach.of(core.settings)  # (where an agent key's schedules may call: the service and runner agree)
    ai = AiService.build(core.settings, core.secret_box, core.database)
    # Backup files are the CLI's (`server/`): written and restored by the same code as `kilnbase db backup`.
    files = LiveBackups(core.settings, str(core.database.owner_pool.conninfo))
    backups = DatabaseBackups(core.database, files, core.schema_cache, core.settings.backups_agent_max)
    auth = Auth.build(core)
    storage = StorageService(core.settings, core.database, core.keys.jwt_secret, core.secret_box)
    return Services(
        core=core,
        auth=auth,
        records=RecordsEngine(core.database, core.schema_cache, core.column_cipher, core.settings.records),
        database=DatabaseAdmin(core.settings, core.database, core.schema_cache, core.agent_keys),
        key_rotation=KeyRotation(core.settings, core.database, core.secret_box, core.keys.ring),
        secrets=secrets,
        ai=ai,
        storage=storage,
        metadata=MetadataService(core.settings, core.database, core.keys.ring),
        logs=LogsService(core.settings, core.database),
        docs=AgentDocs(),
        agents=Agents(core.database, core.agent_keys, core.tokens),
        functions=FunctionsService(core.settings, core.database, runtime),
        realtime=RealtimeService.build(core),
        # Schedules read the secrets their headers name as the functions runtime does: at each run.
        schedules=Schedules(core.database, core.secret_box, secrets.values, reach),
        schedule_runner=ScheduleRunner(
            core.settings,
            core.database,
            str(core.database.owner_pool.conninfo),
            core.secret_box,
            secrets.values,
            reach,
        ),
        database_encryption=ColumnEncryption(core.database, core.column_cipher, core.schema_cache),
        database_webhooks=DatabaseWebhooks(core.database, core.secret_box),
        webhook_runner=DeliveryRunner(
            core.settings.database_webhooks,
            core.database,
            str(core.database.owner_pool.conninfo),
            core.secret_box,
        ),
        messaging=Messaging(core.database, core.settings.messaging),
        message_runner=MessageRunner(
            core.settings.messaging, core.database, str(core.database.owner_pool.conninfo), core.secret_box
        ),
        advisor=Advisor(core.database, core.settings.advisor),
        # Memory calls its models through the gateway, as its caller (limits, credentials, usage ledger).
        memory=Memory(core.database, ModelCalls(ai.gateway), core.settings.memory),
        kv=KvStore(core.database, core.settings.kv),
        database_backups=backups,
        backup_scheduler=ScheduledBackups(backups),
        # The project config changes auth's and storage's settings through their own services.
        project_config=ProjectConfig(core.database, core.agent_keys, auth.admin, storage),
        payments=Payments(core.settings, core.database, core.secret_box, core.rate_limiter),
    )
