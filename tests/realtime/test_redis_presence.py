"""Presence in Redis when Redis fails: a socket joining sees only itself, a socket leaving still leaves (its
member stays listed until the keys expire), and each failure is logged, not raised into the handler."""

from __future__ import annotations

import logging

import pytest

from kilnbase.realtime.redis_presence import RedisPresence
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


async def test_leaving_while_redis_is_unreachable_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    presence = RedisPresence(f"redis://127.0.0.1:{free_port()}/0", "test:")
    # As `track` leaves it for a socket in a room (tracking itself needs Redis).
    presence._sockets["sid-1"] = {"room-1": "presence-1"}
    with caplog.at_level(logging.WARNING, logger="kilnbase.realtime.presence"):
        assert await presence.untrack("room-1", "sid-1") is None
    assert "could not remove sid-1 from room-1" in caplog.text
    assert await presence.untrack("room-1", "sid-1") is None  # forgotten: no second attempt
    assert caplog.text.count("could not remove") == 1
    await presence.close()


async def test_joining_while_redis_is_unreachable_sees_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    presence = RedisPresence(f"redis://127.0.0.1:{free_port()}/0", "test:")
    member = {"type": "anonymous", "presenceId": "sid-2", "joinedAt": "2026-12-05T00:00:00.000Z"}
    with caplog.at_level(logging.WARNING, logger="kilnbase.realtime.presence"):
        assert await presence.track("room-2", "sid-2", member) == ([member], True)
    assert "could not add sid-2 to room-2" in caplog.text
    await presence.close()
