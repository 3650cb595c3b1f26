"""Webhook delivery: each channel URL gets the message's payload as a JSON POST, signed, retried.

InsForge's request (the payload as the body; `X-InsForge-Event`, `X-InsForge-Channel`,
`X-InsForge-Message-Id`), plus what InsForge lacks: an HMAC-SHA256 signature over `<timestamp>.<body>` in
`X-InsForge-Signature: sha256=<hex>` with `X-InsForge-Timestamp` (Unix seconds), so a receiver can tell the
message came from this project and is fresh; and retries with exponential backoff on network errors and 5xx
answers (a 4xx answer is final, as in InsForge).

An attempt is bounded as a whole (`webhook_timeout`, not only each read), and ends with the answer's status:
its body is never read, so a receiver cannot hold a delivery by sending one slowly, nor fill memory with a
large one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx2
import orjson

from kilnbase.config import RealtimeSettings
from kilnbase.http.outbound import hmac_sha256

log = logging.getLogger("kilnbase.realtime.webhooks")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`): what `X-InsForge-Signature` carries."""
    return hmac_sha256(secret, timestamp.encode() + b"." + body)


class WebhookSender:
    def __init__(self, settings: RealtimeSettings) -> None:
        self.settings = settings
        self._client: httpx2.AsyncClient | None = None

    def _client_now(self) -> httpx2.AsyncClient:
        """The client, made for the first delivery rather than at start: making one loads the system's CA
        certificates (65 ms here), which a project without webhooks need never pay for. No proxy is taken
        from the environment, as for database webhooks and schedules (`http/outbound.py`): a receiver is
        called where it was configured to be."""
        if self._client is None:
            self._client = httpx2.AsyncClient(
                timeout=self.settings.webhook_timeout, follow_redirects=False, trust_env=False
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send_all(self, urls: list[str], message: dict[str, Any], secret: str) -> int:
        """Deliver to every URL at once; how many answered 2xx."""
        body = orjson.dumps(message["payload"])
        results = await asyncio.gather(*(self._send(url, message, body, secret) for url in urls))
        return sum(results)

    async def _send(self, url: str, message: dict[str, Any], body: bytes, secret: str) -> bool:
        client = self._client_now()
        delay = self.settings.webhook_retry_delay
        for attempt in range(self.settings.webhook_attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            timestamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "x-insforge-event": message["eventName"],
                "x-insforge-channel": message["channelName"],
                "x-insforge-message-id": message["id"],
                "x-insforge-timestamp": timestamp,
                "x-insforge-signature": signature(secret, timestamp, body),
            }
            try:
                async with (
                    asyncio.timeout(self.settings.webhook_timeout),
                    client.stream("POST", url, content=body, headers=headers) as response,
                ):
                    status = response.status_code
            except (httpx2.HTTPError, TimeoutError) as exc:
                log.info("webhook %s attempt %d failed: %s", url, attempt + 1, type(exc).__name__)
                continue
            if status < 500:
                return 200 <= status < 300
            log.info("webhook %s attempt %d answered %d", url, attempt + 1, status)
        log.warning("webhook delivery to %s failed after %d attempts", url, self.settings.webhook_attempts)
        return False
