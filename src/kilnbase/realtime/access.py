"""Who may subscribe to a channel and who may publish on it: Row Level Security decides, as the caller.

As in InsForge: subscribing is a SELECT of the enabled channel whose pattern matches, on `realtime.channels`;
publishing is an INSERT into `realtime.messages`; both run in a transaction with the caller's role and claims
and with `realtime.channel_name()` set to the channel, so a policy can name it. A channel that no enabled
pattern matches is refused the same way as one the policies close.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
import psycopg

from kilnbase.db.session import Database
from kilnbase.identity.principal import Principal

log = logging.getLogger("kilnbase.realtime")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SET_CHANNEL = "select set_config('realtime.channel_name', %s, true)"
_CAN_SUBSCRIBE = (
    "select exists (select 1 from realtime.channels "
    "where enabled and (pattern = %s or %s like pattern)) as ok"
)
_INSERT = """
insert into realtime.messages (event_name, channel_id, channel_name, payload, sender_type, sender_id)
select %s, channel_id, %s, %s::jsonb, %s, %s
from (select realtime.matching_channel(%s) as channel_id) matched
where channel_id is not null
"""


def sender_of(principal: Principal) -> tuple[str, str | None]:
    """InsForge's sender: an admin publishes as `system`, anyone else as `user`, with the user id when there
    is one (and it is a UUID, the column's type)."""
    if principal.is_admin:
        return "system", None
    user_id = principal.user_id if principal.db_role == "authenticated" else None
    return "user", user_id if user_id and _UUID.match(user_id) else None


class ChannelAccess:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def can_subscribe(self, principal: Principal, channel: str) -> bool:
        try:
            async with self.database.as_caller(principal, read_only=True) as cur:
                await cur.execute(_SET_CHANNEL, (channel,))
                await cur.execute(_CAN_SUBSCRIBE, (channel, channel))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            log.debug("subscribe check failed for %s: %s", channel, type(exc).__name__)
            return False
        return bool(row and row["ok"])

    async def publish(self, principal: Principal, channel: str, event: str, payload: dict[str, Any]) -> bool:
        """Store the message as the caller (it is delivered when this commits); False when refused."""
        sender_type, sender_id = sender_of(principal)
        try:
            async with self.database.as_caller(principal) as cur:
                await cur.execute(_SET_CHANNEL, (channel,))
                await cur.execute(
                    _INSERT,
                    (event, channel, orjson.dumps(payload).decode(), sender_type, sender_id, channel),
                )
        except psycopg.Error as exc:
            log.debug("publish refused on %s: %s", channel, type(exc).__name__)
            return False
        return cur.rowcount == 1
