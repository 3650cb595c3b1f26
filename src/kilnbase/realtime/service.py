"""The realtime capability's service, built once from the core: the Socket.IO server, the RLS checks, the
delivery from the database (and webhooks), and the admin API, with their lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kilnbase.capability import Core
from kilnbase.config import RealtimeSettings
from kilnbase.http.rate_limit import redis_prefix
from kilnbase.identity.principal import CredentialResolver
from kilnbase.realtime.access import ChannelAccess
from kilnbase.realtime.change_feed import ChangeFeed
from kilnbase.realtime.channels import RealtimeAdmin
from kilnbase.realtime.delivery import MessageDelivery
from kilnbase.realtime.direct_emit import DirectEmitManager, DirectEmitRedisManager
from kilnbase.realtime.presence import LocalPresence, Presence
from kilnbase.realtime.redis_presence import RedisPresence
from kilnbase.realtime.socket_server import RealtimeSocketServer
from kilnbase.realtime.webhooks import WebhookSender


@dataclass(frozen=True)
class RealtimeService:
    admin: RealtimeAdmin
    sockets: RealtimeSocketServer
    delivery: MessageDelivery
    changes: ChangeFeed
    settings: RealtimeSettings

    @classmethod
    def build(cls, core: Core) -> RealtimeService:
        settings = core.settings.realtime
        # The listener needs a connection of its own, with the owner pool's connection string.
        conninfo = core.database.owner_pool.conninfo
        assert isinstance(conninfo, str), "the owner pool is built from a connection string"
        access = ChannelAccess(core.database)
        presence: Presence = LocalPresence()
        manager = DirectEmitManager()
        prefix = redis_prefix(core.keys.jwt_secret).removesuffix("rate:") + "realtime:"
        if settings.redis_url:
            presence = RedisPresence(settings.redis_url, prefix)
            manager = DirectEmitRedisManager(settings.redis_url, channel=f"{prefix}socketio")
        changes = ChangeFeed(settings, conninfo, core.database, settings.redis_url, prefix)
        sockets = RealtimeSocketServer(
            settings,
            core.keys,
            CredentialResolver(
                core.keys, core.tokens, core.ended_sessions, core.agent_keys, core.external_tokens
            ),
            core.ended_sessions,
            access,
            presence,
            changes,
            core.agent_keys,
            manager,
        )
        delivery = MessageDelivery(settings, conninfo, core.database, sockets, WebhookSender(settings))
        return cls(RealtimeAdmin(core.database), sockets, delivery, changes, settings)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.delivery.start()
        await self.changes.start()
        sessions = asyncio.create_task(self.sockets.watch_sessions(self.settings.session_check_seconds))
        try:
            yield
        finally:
            sessions.cancel()
            await asyncio.wait([sessions], timeout=5)
            await self.sockets.close()
            await self.sockets.access.close()
            await self.changes.stop()
            await self.delivery.stop()
