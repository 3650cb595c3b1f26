"""Providers: the outside parties that run models, behind one small interface.

Every provider Kilnbase speaks to today talks the OpenAI wire format (OpenRouter, OpenAI, Ollama, vLLM,
llama.cpp server, LM Studio), so one implementation serves them all; OpenRouter differs only in its base URL,
its attribution headers and the endpoint that validates a key. Retries live in the gateway, not here: a
provider call is one HTTP exchange, so that a retry can land on another model.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx2
import orjson

from kilnbase.ai.redaction import scrub_key_shapes
from kilnbase.ai.upstream_http import HttpPool, TransportFailure, TransportTimeout

_JSON = {"content-type": "application/json"}


class UpstreamError(Exception):
    """The provider answered with an error, or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (0, 408, 409, 429) or self.status >= 500


class StreamBroken(Exception):
    """The stream started and then failed: an error frame, malformed bytes, or a dropped connection."""

    def __init__(self, message: str, usage: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


@dataclass
class UpstreamResponse:
    body: dict[str, Any]
    headers: Mapping[str, str]


class UpstreamStream:
    """An open event stream: `events()` yields each `data:` payload parsed; comment lines as None.

    `next_chunk` gives the body's bytes as they come (None at the end); `close(drain)` ends the call, and
    `drain` says that the provider's `[DONE]` was seen, so the connection may be kept for the next call.
    """

    def __init__(
        self,
        next_chunk: Callable[[], Awaitable[bytes | None]],
        close: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._next_chunk = next_chunk
        self._close = close
        self._done = False

    async def events(self) -> AsyncIterator[dict[str, Any] | None]:
        pending = b""
        try:
            while True:
                chunk = await self._next_chunk()
                if chunk is None:
                    lines = [pending] if pending else []
                else:
                    lines = (pending + chunk).splitlines(keepends=True)
                    # The last line may be cut short (or end in the "\r" of a "\r\n" split across chunks).
                    pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
                for raw in lines:
                    line = raw.rstrip(b"\r\n")
                    if not line:
                        continue
                    if line.startswith(b":"):
                        yield None
                        continue
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        self._done = True
                        return
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError as exc:
                        raise StreamBroken("The provider sent a malformed event.") from exc
                    if not isinstance(event, dict):
                        raise StreamBroken("The provider sent a malformed event.")
                    yield event
                if chunk is None:
                    return
        except (TransportFailure, httpx2.TransportError) as exc:
            raise StreamBroken("The connection to the provider was lost mid-stream.") from exc

    async def aclose(self) -> None:
        await self._close(self._done)


class Provider(Protocol):
    """What the gateway needs from a provider."""

    name: str

    async def chat(self, body: dict[str, Any], key: str | None) -> UpstreamResponse: ...

    async def open_chat_stream(self, body: dict[str, Any], key: str | None) -> UpstreamStream: ...

    async def embeddings(self, body: dict[str, Any], key: str | None) -> UpstreamResponse: ...

    async def models(self, key: str | None) -> list[dict[str, Any]]: ...

    async def validate_key(self, key: str) -> bool: ...


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            return None
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            return None
    return None


def _error_message(status: int, raw: bytes) -> str:
    """The upstream's own message when it has one (OpenAI and OpenRouter share `{error: {message}}`), with
    anything shaped like a key removed; the gateway's `Redactor` removes the keys it knows of on top."""
    try:
        body = orjson.loads(raw)
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(message, str) and message:
            return scrub_key_shapes(message[:500])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return f"The provider answered HTTP {status}."


def _proxied(url: str) -> bool:
    """Whether the environment sends requests for `url` through a proxy. httpx2 honours that and the lean
    client does not speak to proxies, so such a provider is called through httpx2."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class OpenAICompatibleProvider:
    """Any server speaking OpenAI's `/chat/completions`, `/embeddings` and `/models`.

    Chat and embeddings, on every request's path, go through the lean `pool` when one is given (and no
    proxy applies); the rest (catalog, key checks) through the httpx2 `client`.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        client: httpx2.AsyncClient,
        *,
        pool: HttpPool | None = None,
        extra_headers: Mapping[str, str] | None = None,
        key_check_path: str = "/models",
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._pool = pool if pool is not None and not _proxied(self.base_url) else None
        self._headers = {**_JSON, **(extra_headers or {})}
        self._key_check_path = key_check_path

    def _auth(self, key: str | None) -> dict[str, str]:
        return {**self._headers, "authorization": f"Bearer {key}"} if key else self._headers

    async def _exchange(
        self, path: str, content: bytes, key: str | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        url, headers = self.base_url + path, self._auth(key)
        if self._pool is not None:
            try:
                answer = await self._pool.request("POST", url, headers, content)
            except TransportTimeout as exc:
                raise UpstreamError(408, "The provider did not answer in time.") from exc
            except TransportFailure as exc:
                raise UpstreamError(0, "The provider could not be reached.") from exc
            return answer.status, answer.headers, answer.body
        try:
            response = await self._client.post(url, content=content, headers=headers)
        except httpx2.TimeoutException as exc:
            raise UpstreamError(408, "The provider did not answer in time.") from exc
        except httpx2.TransportError as exc:
            raise UpstreamError(0, "The provider could not be reached.") from exc
        return response.status_code, response.headers, response.content

    async def _post(self, path: str, body: dict[str, Any], key: str | None) -> UpstreamResponse:
        status, headers, raw = await self._exchange(path, orjson.dumps(body), key)
        if status != 200:
            raise UpstreamError(status, _error_message(status, raw), _retry_after(headers))
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(502, "The provider sent a malformed response.") from exc
        if not isinstance(parsed, dict):
            raise UpstreamError(502, "The provider sent a malformed response.")
        if "error" in parsed and not parsed.get("choices") and not parsed.get("data"):
            error = parsed["error"] if isinstance(parsed["error"], dict) else {}
            code = error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            message = str(error.get("message") or "The provider returned an error.")[:500]
            raise UpstreamError(status, scrub_key_shapes(message))
        return UpstreamResponse(parsed, headers)

    async def chat(self, body: dict[str, Any], key: str | None) -> UpstreamResponse:
        return await self._post("/chat/completions", body, key)

    async def embeddings(self, body: dict[str, Any], key: str | None) -> UpstreamResponse:
        return await self._post("/embeddings", body, key)

    async def open_chat_stream(self, body: dict[str, Any], key: str | None) -> UpstreamStream:
        url, content, headers = self.base_url + "/chat/completions", orjson.dumps(body), self._auth(key)
        if self._pool is not None:
            try:
                streamed = await self._pool.stream("POST", url, headers, content)
            except TransportTimeout as exc:
                raise UpstreamError(408, "The provider did not answer in time.") from exc
            except TransportFailure as exc:
                raise UpstreamError(0, "The provider could not be reached.") from exc
            if streamed.status != 200:
                try:
                    raw = await streamed.read()
                except TransportFailure:
                    raw = b""
                finally:
                    await streamed.aclose()
                raise UpstreamError(
                    streamed.status, _error_message(streamed.status, raw), _retry_after(streamed.headers)
                )
            return UpstreamStream(streamed.next_chunk, streamed.aclose)
        request = self._client.build_request("POST", url, content=content, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.TimeoutException as exc:
            raise UpstreamError(408, "The provider did not answer in time.") from exc
        except httpx2.TransportError as exc:
            raise UpstreamError(0, "The provider could not be reached.") from exc
        if response.status_code != 200:
            try:
                raw = await response.aread()
            except httpx2.TransportError:
                raw = b""
            finally:
                await response.aclose()
            raise UpstreamError(
                response.status_code,
                _error_message(response.status_code, raw),
                _retry_after(response.headers),
            )
        chunks = response.aiter_bytes()

        async def next_chunk() -> bytes | None:
            return await anext(chunks, None)

        async def close(_drain: bool) -> None:
            await response.aclose()

        return UpstreamStream(next_chunk, close)

    async def models(self, key: str | None) -> list[dict[str, Any]]:
        try:
            response = await self._client.get(self.base_url + "/models", headers=self._auth(key))
        except httpx2.TransportError as exc:
            raise UpstreamError(0, "The provider could not be reached.") from exc
        if response.status_code != 200:
            raise UpstreamError(response.status_code, _error_message(response.status_code, response.content))
        try:
            data = orjson.loads(response.content).get("data")
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise UpstreamError(502, "The provider sent a malformed model list.") from exc
        return (
            [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
            if isinstance(data, list)
            else []
        )

    async def validate_key(self, key: str) -> bool:
        """True when the provider accepts the key; raises UpstreamError when it cannot tell."""
        try:
            response = await self._client.get(self.base_url + self._key_check_path, headers=self._auth(key))
        except httpx2.TransportError as exc:
            raise UpstreamError(0, "The provider could not be reached to validate the key.") from exc
        if response.status_code in (401, 403):
            return False
        if response.status_code != 200:
            raise UpstreamError(response.status_code, "The provider could not validate the key right now.")
        return True


def openrouter(
    base_url: str, client: httpx2.AsyncClient, pool: HttpPool | None = None
) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "openrouter",
        base_url,
        client,
        pool=pool,
        extra_headers={"http-referer": "https://kilnbase.dev", "x-title": "Kilnbase"},
        key_check_path="/key",
    )
