"""`@insforge/sdk`'s `ai` module, unchanged, against a live `kilnbase serve` whose OpenRouter is the fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support.fake_openrouter import FakeOpenRouter, Reply
from tests.support.node import run_node
from tests.support.servers import ServerProcess

SCRIPT = """
import { createClient } from '@insforge/sdk';
const client = createClient({ baseUrl: process.env.KB_URL, anonKey: process.env.KB_ANON });
const out = {};
const reply = await client.ai.chat.completions.create({
  model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hello sdk' }], maxTokens: 64 });
out.text = reply.choices[0].message.content;
out.usage = reply.usage;
const stream = await client.ai.chat.completions.create({
  model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'stream please' }], stream: true });
out.streamed = '';
out.toolCalls = [];
for await (const chunk of stream) {
  out.streamed += chunk.choices[0]?.delta?.content ?? '';
  for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) out.toolCalls.push(call);
}
const embedded = await client.ai.embeddings.create({
  model: 'openai/text-embedding-3-small', input: ['a', 'b'] });
out.embeddings = embedded.data.length;
out.embeddingUsage = embedded.usage;
const image = await client.ai.images.generate({
  model: 'google/gemini-2.5-flash-image-preview', prompt: 'a kiln' });
out.imageStart = image.data[0].b64_json.slice(0, 8);
try {
  await client.ai.chat.completions.create({
    model: 'no/such-model', messages: [{ role: 'user', content: 'x' }] });
  out.unknown = 'accepted';
} catch (error) {
  out.unknown = String(error.message || error);
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def gateway_env() -> Iterator[FakeOpenRouter]:
    """Started before `live_server`, so the server process inherits OPENROUTER_* from the environment."""
    fake = FakeOpenRouter().start()
    patch = pytest.MonkeyPatch()
    patch.setenv("OPENROUTER_BASE_URL", fake.url)
    patch.setenv("OPENROUTER_API_KEY", "sk-or-v1-fake")
    yield fake
    patch.undo()
    fake.stop()


@pytest.fixture(scope="module")
def ai_live(
    gateway_env: FakeOpenRouter, live_server: ServerProcess, live_keys: dict[str, str]
) -> tuple[FakeOpenRouter, dict[str, str]]:
    return gateway_env, live_keys


def test_insforge_sdk_ai_module_works_unchanged(ai_live: tuple[FakeOpenRouter, dict[str, str]]) -> None:
    fake, keys = ai_live
    # The SDK calls with the anon key, which the gateway refuses unless the policy admits anon callers.
    admin = {"authorization": f"Bearer {keys['apiKey']}"}
    policy = httpx2.put(keys["url"] + "/api/ai/policy", json={"anonAccess": True}, headers=admin)
    assert policy.status_code == 200
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    fake.script(Reply(), Reply(content="streamed words", tool_calls=calls))
    out: dict[str, Any] = run_node(SCRIPT, {"KB_URL": keys["url"], "KB_ANON": keys["anonKey"]})
    assert out["text"] == "Hello from openai/gpt-4o-mini: you said 'hello sdk'."
    assert out["usage"]["totalTokens"] == out["usage"]["promptTokens"] + out["usage"]["completionTokens"]
    assert out["streamed"] == "streamed words"
    assert out["toolCalls"] == calls
    assert out["embeddings"] == 2
    assert out["embeddingUsage"]["prompt_tokens"] > 0
    assert out["imageStart"] == "iVBORw0K"
    assert "INVALID_INPUT" in out["unknown"] or "Unknown model" in out["unknown"]
    assert fake.chat_calls()[0]["body"]["max_tokens"] == 64
