"""The Socket.IO side of realtime, speaking InsForge's protocol so that `@insforge/sdk` works unchanged.

- Handshake: `auth.token` is the anon key (`anon_...`) or a JWT, `auth.apiKey` the admin API key; anything
  invalid, expired or missing is refused with InsForge's messages. A token's expiry (a user's, or an agent's
  session token) ends the connection's subscriptions (each announced with `realtime:error`, code
  `AUTH_TOKEN_EXPIRED`) and the connection. InsForge checks a token only at the handshake, so an expired
  or signed-out token there keeps receiving for as long as the socket stays open; Kilnbase does not follow
  it in that.
- `realtime:subscribe {channel}` with an ack `{ok: true, channel, presence: {members}}` or `{ok: false,
  channel, error: {code, message}}`; permission is the RLS check of `access.py`. Joining announces
  `presence:join {member, meta}` to the others in the room.
- `realtime:unsubscribe {channel}` (no ack): `presence:leave` when it was the member's last socket.
- `realtime:publish {channel, event, payload}`: subscribed first (else `REALTIME_NOT_SUBSCRIBED`), then stored
  as the caller (RLS INSERT); delivery follows from the database (`delivery.py`), as for SQL publishes.
- Agent keys (and their session tokens) act as project_admin, which RLS does not narrow: subscribing needs
  the key's `realtime:read`, publishing `realtime:write` and read-only mode off, as on the REST routes; a key
  revoked or expired since the handshake does neither.
- Limits: subscriptions per connection, client events per second (a token bucket), payload size. A malformed
  or unknown event is answered with `realtime:error`, never an exception: a packet that does not decode,
  an event name that is not a string or is one of Socket.IO's own (`connect`, `disconnect`, ...: see
  `direct_emit.FanOutServer`), arguments past the first. Nor is a message published under one of those
  names: Socket.IO's clients would take it for their own event.

Rooms are `realtime:<channel>`, as in InsForge. With `REDIS_URL` set, python-socketio's Redis manager shares
rooms between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import socketio  # type: ignore[import-untyped]

from kilnbase.config import RealtimeSettings
from kilnbase.http.json_body import nul_at
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.identity.principal import Access, CredentialError, CredentialKind, CredentialResolver, Principal
from kilnbase.keys.project_keys import ProjectKeys
from kilnbase.realtime.access import ChannelAccess
from kilnbase.realtime.change_feed import ChangeFeed
from kilnbase.realtime.direct_emit import RESERVED_EVENTS, FanOutServer
from kilnbase.realtime.presence import Presence

log = logging.getLogger("kilnbase.realtime")

CHECK_TOKEN = "Check the token is valid or login to get a new token."  # noqa: S105
CHECK_API_KEY = "Check the API key is valid or generate a new API key."
MAX_CHANNEL_LENGTH = 255
MAX_EVENT_LENGTH = 255
#: Client events with handlers of their own; any other is answered with `realtime:error`.
CLIENT_EVENTS = frozenset({"realtime:subscribe", "realtime:unsubscribe", "realtime:publish"})


def room_of(channel: str) -> str:
    return f"realtime:{channel}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Refused(Exception):
    """A handshake refused: InsForge's message, with its code in `data`."""

    def __init__(self, message: str, code: str, next_actions: str) -> None:
        super().__init__(message)
        self.data = {"code": code, "statusCode": 401, "nextActions": next_actions}


@dataclass
class Connection:
    principal: Principal
    #: Channels (not rooms) this connection is subscribed to.
    channels: set[str] = field(default_factory=set)
    #: Channels whose subscription is being checked: they hold a place under the limit meanwhile (events
    #: are handled concurrently, and the check waits on the database).
    pending: set[str] = field(default_factory=set)
    tokens: float = 0.0
    refilled_at: float = field(default_factory=time.monotonic)
    expiry: asyncio.TimerHandle | None = None

    @property
    def member_id(self) -> str | None:
        """The user id that makes this connection a `user` presence member; else it is `anonymous`."""
        if self.principal.kind is CredentialKind.JWT and self.principal.user_id:
            return self.principal.user_id
        return None


def error_payload(code: str, message: str, channel: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if channel is not None:
        body = {"channel": channel, **body}
    return body


def _channel_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel or len(channel) > MAX_CHANNEL_LENGTH:
        return None
    return channel


class RealtimeSocketServer:
    def __init__(
        self,
        settings: RealtimeSettings,
        keys: ProjectKeys,
        resolver: CredentialResolver,
        ended_sessions: EndedSessions,
        access: ChannelAccess,
        presence: Presence,
        changes: ChangeFeed,
        agent_keys: AgentKeys,
        client_manager: Any = None,
    ) -> None:
        self.settings = settings
        self.agent_keys = agent_keys
        self.keys = keys
        self.resolver = resolver
        self.ended_sessions = ended_sessions
        self.access = access
        self.presence = presence
        self.changes = changes
        changes.attach(self._emit_change)
        self.connections: dict[str, Connection] = {}
        #: Set by a connection: `watch_sessions` sleeps while there is none.
        self._connected = asyncio.Event()
        self._expiring: set[asyncio.Future[None]] = set()
        self.sio = FanOutServer(
            async_mode="asgi",
            # CORS for HTTP (long-polling) is the edge middleware's, as for every route; a WebSocket has none.
            cors_allowed_origins=[],
            client_manager=client_manager,
            max_http_buffer_size=max(1_000_000, settings.max_payload_bytes * 2),
            logger=False,
            engineio_logger=False,
            on_malformed=self._on_malformed,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("realtime:subscribe", self._on_subscribe)
        self.sio.on("realtime:unsubscribe", self._on_unsubscribe)
        self.sio.on("realtime:publish", self._on_publish)
        self.sio.on("*", self._on_unknown)
        #: The ASGI app: every request under the mount point goes to the Engine.IO server.
        self.asgi_app = socketio.ASGIApp(self.sio, socketio_path=None)

    # --- handshake -----------------------------------------------------------------------------------------

    def authenticate(self, auth: Any) -> Principal:
        """InsForge's order: an API key, then an anon key in `token`, then a JWT in `token`."""
        auth = auth if isinstance(auth, dict) else {}
        api_key, token = auth.get("apiKey"), auth.get("token")
        ring = self.keys.ring
        if api_key:
            ring.maybe_refresh()
            if isinstance(api_key, str) and api_key.startswith("ik_") and ring.accepts("api_key", api_key):
                return Principal(
                    db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"}
                )
            raise Refused("Invalid API key", "AUTH_INVALID_API_KEY", CHECK_API_KEY)
        if not token:
            raise Refused("No authentication provided", "AUTH_INVALID_CREDENTIALS", CHECK_TOKEN)
        if not isinstance(token, str):
            raise Refused("Invalid authentication", "AUTH_INVALID_CREDENTIALS", CHECK_TOKEN)
        try:
            return self.resolver.resolve(f"Bearer {token}", None)
        except CredentialError as exc:
            if token.startswith("anon_"):
                raise Refused("Invalid anon key", "AUTH_INVALID_CREDENTIALS", CHECK_TOKEN) from None
            expired = "expired" in str(exc).lower()
            code = "AUTH_TOKEN_EXPIRED" if expired else "AUTH_INVALID_CREDENTIALS"
            raise Refused(f"Invalid token: {exc}", code, CHECK_TOKEN) from None

    async def _on_connect(self, sid: str, _environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if isinstance(token, str) and token:  # (an external provider's keys, fetched before the sync check)
            with contextlib.suppress(CredentialError):
                await self.resolver.resolve_fetching(f"Bearer {token}", None)
        try:
            principal = self.authenticate(auth)
        except Refused as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc), exc.data) from None
        connection = Connection(principal, tokens=float(self.settings.event_burst))
        self.connections[sid] = connection
        self._connected.set()
        # (A user's token, or an agent's session token: the API key, anon key and agent key carry no `exp`;
        # an agent key's own expiry is `watch_sessions`'.)
        expires_at = principal.claims.get("exp")
        if isinstance(expires_at, int | float):
            delay = max(0.0, float(expires_at) - time.time())
            connection.expiry = asyncio.get_running_loop().call_later(delay, self._expire_later, sid)

    def _expire_later(self, sid: str) -> None:
        task = asyncio.ensure_future(self.expire(sid))
        self._expiring.add(task)  # held until done: the loop keeps only a weak reference to a task
        task.add_done_callback(self._expiring.discard)

    async def expire(self, sid: str, *, signed_out: bool = False) -> None:
        """The connection's token expired (or its session ended): end every subscription it allowed, then the
        connection."""
        connection = self.connections.get(sid)
        if connection is None:
            return
        code, message = (
            (
                "AUTH_UNAUTHORIZED",
                "The session of this token has been signed out; this subscription has ended.",
            )
            if signed_out
            else ("AUTH_TOKEN_EXPIRED", "The access token expired; this subscription has ended.")
        )
        for channel in list(connection.channels):
            await self._leave(sid, connection, channel)
            await self.sio.emit("realtime:error", error_payload(code, message, channel), to=sid)
        await self.sio.disconnect(sid)

    async def watch_sessions(self, every: float) -> None:
        """End the connections whose session has ended (signed out, revoked, deleted; an agent key revoked or
        expired) since they connected: every process learns of it within moments (`EndedSessions`,
        `AgentKeys`), and this looks every `every` seconds while any connection is open (and sleeps while
        none is, instead of waking to look at nothing)."""
        while True:
            if not self.connections:
                self._connected.clear()
                await self._connected.wait()
            await asyncio.sleep(every)
            for sid, connection in list(self.connections.items()):
                if self._has_ended(connection.principal):
                    await self.expire(sid, signed_out=True)

    def _has_ended(self, principal: Principal) -> bool:
        """The credential's session was signed out, its agent key revoked or expired, or its external JWT
        provider switched off, deleted or given another role."""
        session = principal.claims.get("sid")
        if isinstance(session, str) and self.ended_sessions.has_ended(session):
            return True
        if self.resolver.withdrawn(principal):
            return True
        return principal.agent is not None and self.agent_keys.by_id(principal.agent.id) is None

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        connection = self.connections.pop(sid, None)
        if connection is None:
            return
        if connection.expiry is not None:
            connection.expiry.cancel()
        for channel in list(connection.channels):
            await self._leave(sid, connection, channel, left_room=True)

    # --- limits --------------------------------------------------------------------------------------------

    def _allowed(self, connection: Connection) -> bool:
        """One token per client event, refilled at `events_per_second` up to `event_burst`."""
        now = time.monotonic()
        connection.tokens = min(
            float(self.settings.event_burst),
            connection.tokens + (now - connection.refilled_at) * self.settings.events_per_second,
        )
        connection.refilled_at = now
        if connection.tokens < 1:
            return False
        connection.tokens -= 1
        return True

    async def _error(self, sid: str, code: str, message: str, channel: str | None = None) -> None:
        await self.sio.emit("realtime:error", error_payload(code, message, channel), to=sid)

    async def _gate(self, sid: str, channel: str | None) -> Connection | None:
        """The connection, when this event may proceed; else it has been told why not."""
        connection = self.connections.get(sid)
        if connection is None:
            return None
        if not self._allowed(connection):
            await self._error(sid, "RATE_LIMITED", "Too many realtime events; slow down.", channel)
            return None
        return connection

    # --- client events -------------------------------------------------------------------------------------

    async def _on_subscribe(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        channel = _channel_of(data)
        if channel is None:
            return {
                "ok": False,
                "channel": data.get("channel") if isinstance(data, dict) else None,
                "error": {"code": "REALTIME_INVALID_CHANNEL_REQUEST", "message": "channel is required"},
            }
        connection = self.connections.get(sid)
        if connection is None or not self._allowed(connection):
            return self._refusal(channel, "RATE_LIMITED", "Too many realtime events; slow down.")
        new = channel not in connection.channels and channel not in connection.pending
        if new and len(connection.channels) + len(connection.pending) >= self.settings.max_subscriptions:
            return self._refusal(
                channel,
                "REALTIME_SUBSCRIPTION_LIMIT",
                f"At most {self.settings.max_subscriptions} subscriptions per connection.",
            )
        if new:
            connection.pending.add(channel)
        try:
            return await self._subscribe(sid, connection, channel, data)
        finally:
            if new:
                connection.pending.discard(channel)

    async def _subscribe(self, sid: str, connection: Connection, channel: str, data: Any) -> dict[str, Any]:
        """`_on_subscribe` past the limits: the checks, then the room and presence."""
        agent_refusal = self._agent_refusal(connection.principal, "read")
        if agent_refusal is not None:
            return self._refusal(channel, *agent_refusal)
        if self.changes.is_change_channel(channel):
            assert isinstance(data, dict)
            refusal = await self.changes.subscribe(sid, connection.principal, channel, data.get("event"))
            if refusal is not None:
                return self._refusal(channel, *refusal)
        elif not await self.access.can_subscribe(connection.principal, channel):
            return self._refusal(
                channel, "REALTIME_UNAUTHORIZED", "Not authorized to subscribe to this channel"
            )
        if sid not in self.connections:  # disconnected while the check ran
            self.changes.forget(sid)
            return self._refusal(channel, "DISCONNECTED", "Disconnected")
        room = room_of(channel)
        await self.sio.enter_room(sid, room)
        connection.channels.add(channel)
        member_id = connection.member_id
        member = {
            "type": "user" if member_id else "anonymous",
            "presenceId": member_id or sid,
            "joinedAt": now_iso(),
        }
        members, joined = await self.presence.track(room, sid, member)
        if joined:
            await self.sio.emit(
                "presence:join", {"member": member, "meta": self.meta(channel)}, room=room, skip_sid=sid
            )
        return {"ok": True, "channel": channel, "presence": {"members": members}}

    def _agent_refusal(self, principal: Principal, wanted: Access) -> tuple[str, str] | None:
        """(code, message) when an agent's key does not reach `realtime:<wanted>` now; None for every other
        caller, whom RLS decides for. Checked per event, not at the handshake: a key can be revoked, or
        read-only mode turned on, while its socket stays open."""
        agent = principal.agent
        if agent is None:
            return None
        if self.agent_keys.by_id(agent.id) is None:
            return "AUTH_UNAUTHORIZED", "This agent key has been revoked or has expired."
        if wanted == "write" and self.agent_keys.read_only:
            return "AGENT_READ_ONLY", "The project is in read-only mode for agents: no agent key may publish."
        if not principal.allows("realtime", wanted):
            return "FORBIDDEN", f"This agent key's scopes do not reach realtime:{wanted}."
        return None

    @staticmethod
    def _refusal(channel: str, code: str, message: str) -> dict[str, Any]:
        return {"ok": False, "channel": channel, "error": {"code": code, "message": message}}

    async def _on_unsubscribe(self, sid: str, data: Any = None, *_extra: Any) -> None:
        channel = _channel_of(data)
        connection = await self._gate(sid, channel)
        if connection is None:
            return
        if channel is None:
            await self._error(sid, "REALTIME_INVALID_CHANNEL_REQUEST", "channel is required")
            return
        await self._leave(sid, connection, channel)

    async def _leave(
        self, sid: str, connection: Connection, channel: str, *, left_room: bool = False
    ) -> None:
        room = room_of(channel)
        connection.channels.discard(channel)
        self.changes.unsubscribe(sid, channel)
        member = await self.presence.untrack(room, sid)
        if member is not None:
            await self.sio.emit(
                "presence:leave", {"member": member, "meta": self.meta(channel)}, room=room, skip_sid=sid
            )
        if not left_room:
            await self.sio.leave_room(sid, room)

    async def _on_publish(self, sid: str, data: Any = None, *_extra: Any) -> None:
        channel = _channel_of(data)
        connection = await self._gate(sid, channel)
        if connection is None:
            return
        if channel is None or not isinstance(data, dict):
            await self._error(sid, "REALTIME_INVALID_EVENT", "publish needs {channel, event, payload}")
            return
        event, payload = data.get("event"), data.get("payload")
        if not isinstance(event, str) or not event or len(event) > MAX_EVENT_LENGTH:
            await self._error(sid, "REALTIME_INVALID_EVENT", "event must be a non-empty string", channel)
            return
        if event in RESERVED_EVENTS or "\x00" in event:
            await self._error(
                sid,
                "REALTIME_INVALID_EVENT",
                "event cannot contain the NUL character, nor be one of Socket.IO's own: "
                + ", ".join(sorted(RESERVED_EVENTS)),
                channel,
            )
            return
        if not isinstance(payload, dict):
            await self._error(sid, "REALTIME_INVALID_EVENT", "payload must be a JSON object", channel)
            return
        if channel not in connection.channels:
            await self._error(
                sid,
                "REALTIME_NOT_SUBSCRIBED",
                "Must subscribe to channel before publishing messages",
                channel,
            )
            return
        try:
            dumped = orjson.dumps(payload)
        except TypeError:  # (orjson.JSONEncodeError) an integer past 64 bits, or nesting past 254 levels
            await self._error(
                sid,
                "REALTIME_INVALID_EVENT",
                "payload cannot be stored: integers must fit in 64 bits and nesting is at most 254 levels",
                channel,
            )
            return
        if b"\\u0000" in dumped and (where := nul_at(payload)) is not None:
            await self._error(
                sid,
                "REALTIME_INVALID_EVENT",
                f"payload.{where}: text cannot contain the NUL character (\\u0000)",
                channel,
            )
            return
        size = len(dumped)
        if size > self.settings.max_payload_bytes:
            await self._error(
                sid,
                "REALTIME_INVALID_EVENT",
                f"payload is {size} bytes; at most {self.settings.max_payload_bytes} are allowed",
                channel,
            )
            return
        agent_refusal = self._agent_refusal(connection.principal, "write")
        if agent_refusal is not None:
            await self._error(sid, *agent_refusal, channel)
            return
        if not await self.access.publish(connection.principal, channel, event, payload):
            await self._error(
                sid, "REALTIME_UNAUTHORIZED", "Not authorized to publish to this channel", channel
            )

    async def _on_unknown(self, event: str, sid: str, *_args: Any) -> None:
        connection = await self._gate(sid, None)
        if connection is not None and event not in CLIENT_EVENTS:
            await self._error(sid, "REALTIME_INVALID_EVENT", f"Unknown event: {event[:100]}")

    async def _on_malformed(self, sid: str) -> None:
        """A packet that is no event this server takes (`direct_emit.FanOutServer`)."""
        if await self._gate(sid, None) is not None:
            await self._error(
                sid,
                "REALTIME_INVALID_EVENT",
                "Malformed packet: send an event as [name, data], its name a string other than Socket.IO's "
                "own (" + ", ".join(sorted(RESERVED_EVENTS)) + ")",
            )

    # --- delivery ------------------------------------------------------------------------------------------

    @staticmethod
    def meta(channel: str, **fields: Any) -> dict[str, Any]:
        return {
            "channel": channel,
            "messageId": str(uuid.uuid4()),
            "senderType": "system",
            "timestamp": now_iso(),
            **fields,
        }

    def audience(self, channel: str) -> int:
        """How many of this process's sockets are in the channel's room."""
        rooms: dict[str, Any] = self.sio.manager.rooms.get("/", {})
        return len(rooms.get(room_of(channel), ()))

    async def broadcast(self, message: dict[str, Any]) -> None:
        """A stored message to its room, in InsForge's shape: the payload's fields plus `meta`."""
        if message["eventName"] in RESERVED_EVENTS:
            # Published by SQL under a name of Socket.IO's own: its clients would take it for their own
            # event (a `disconnect` they never had). InsForge's server cannot emit it either (it throws).
            log.warning(
                "realtime message %s not sent to sockets: its event name is Socket.IO's own", message["id"]
            )
            return
        meta: dict[str, Any] = {
            "channel": room_of(message["channelName"]),
            "messageId": message["id"],
            "senderType": message["senderType"],
            "timestamp": now_iso(),
        }
        if message.get("senderId"):
            meta["senderId"] = message["senderId"]
        body = {**message["payload"], "meta": meta}
        # Every process delivers each message to its own sockets: never through the Redis manager.
        await self.sio.emit(
            message["eventName"], body, room=room_of(message["channelName"]), ignore_queue=True
        )

    async def _emit_change(self, sid: str, channel: str, payload: dict[str, Any]) -> None:
        """A change event to one subscriber (after its RLS check), Supabase's payload plus InsForge's meta."""
        body = {**payload, "meta": self.meta(room_of(channel))}
        await self.sio.emit("postgres_changes", body, to=sid, ignore_queue=True)

    async def close(self) -> None:
        for connection in self.connections.values():
            if connection.expiry is not None:
                connection.expiry.cancel()
        for sid in list(self.connections):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        await self.presence.close()
