"""A channel's webhook is called where it was configured to be, whatever proxy the server's environment
names, as database webhooks and schedules are."""

from __future__ import annotations

import socket

import pytest

from kilnbase.config import RealtimeSettings
from kilnbase.realtime.webhooks import WebhookSender
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio


async def test_a_proxy_in_the_environment_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:  # a port nothing listens on once it is closed
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    sender = WebhookSender(RealtimeSettings(webhook_attempts=1))
    message = {"id": "m-1", "eventName": "paid", "channelName": "orders", "payload": {"n": 1}}
    try:
        with WebhookReceiver() as receiver:
            assert await sender.send_all([receiver.url], message, "secret") == 1
            assert [r["messageId"] for r in receiver.requests] == ["m-1"]
    finally:
        await sender.close()
