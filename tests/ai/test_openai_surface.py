"""The `/v1` surface driven by the real `openai` SDK against the scripted upstream; the ledger in SQL."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.ai.conftest import AppServer, wait_for
from tests.support.fake_openrouter import Fail, FakeOpenRouter, Malformed, MidStreamError, Reply

SQL = Callable[..., list[dict[str, Any]]]
MODEL = "openai/gpt-4o-mini"
TOOL_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
    },
]
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]


@pytest.fixture
def client(server: AppServer, api_key: str, fake: FakeOpenRouter) -> Iterator[openai.OpenAI]:
    fake.reset()
    with openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0) as sdk:
        yield sdk


def at_least(n: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` once there are `n` of them; until then nothing (for `wait_for`)."""
    return rows if len(rows) >= n else []


def last_rows(sql: SQL, n: int) -> list[dict[str, Any]]:
    return sql("select * from ai.usage order by created_at desc limit %s", n)


def count_rows(sql: SQL) -> int:
    return int(sql("select count(*) as n from ai.usage")[0]["n"])


def test_chat_non_streaming_returns_openai_shape_and_writes_the_ledger(
    client: openai.OpenAI, sql: SQL
) -> None:
    before = count_rows(sql)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "ping"}]
    )
    assert float(raw.headers["x-kilnbase-overhead-ms"]) >= 0
    assert float(raw.headers["x-kilnbase-cost-usd"]) > 0
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "Hello from openai/gpt-4o-mini: you said 'ping'."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    wait_for(lambda: count_rows(sql) > before)
    row = last_rows(sql, 1)[0]
    assert row["status"] == "ok"
    assert row["streamed"] is False
    assert row["input_tokens"] == reply.usage.prompt_tokens
    assert row["output_tokens"] == reply.usage.completion_tokens
    assert row["key_source"] == "env"
    assert row["provider"] == "openrouter"
    assert row["cost_usd"] > 0


def test_stream_with_include_usage_ends_with_one_cumulative_usage_chunk(
    client: openai.OpenAI, fake: FakeOpenRouter, sql: SQL
) -> None:
    fake.script(
        Reply(
            content="one two three four", prompt_tokens=7, completion_tokens=40, cost=0.5, interim_usage=True
        )
    )
    before = count_rows(sql)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 40)
    wait_for(lambda: count_rows(sql) > before)
    row = last_rows(sql, 1)[0]
    assert (row["input_tokens"], row["output_tokens"], row["streamed"]) == (7, 40, True)
    assert float(row["cost_usd"]) == 0.5
    assert row["ttft_ms"] is not None


def test_stream_without_include_usage_has_no_usage_field_and_ends_with_done(
    server: AppServer, api_key: str, fake: FakeOpenRouter
) -> None:
    fake.reset()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx2.post(
        server.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    data = [orjson.loads(e[6:]) for e in events if e.startswith("data: {")]
    assert data
    assert all("usage" not in d and d["object"] == "chat.completion.chunk" for d in data)
    assert all(list(d) == ["id", "object", "created", "model", "system_fingerprint", "choices"] for d in data)
    assert all(list(c) == ["index", "delta", "logprobs", "finish_reason"] for d in data for c in d["choices"])
    assert len({d["id"] for d in data}) == 1
    assert all(d["choices"] for d in data)


def test_tools_tool_choice_and_response_format_reach_the_provider_and_tool_calls_stream_by_index(
    client: openai.OpenAI, fake: FakeOpenRouter
) -> None:
    fake.script(Reply(tool_calls=TOOL_CALLS), Reply(tool_calls=TOOL_CALLS))
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "weather and time"}],
        tools=TOOLS,
        tool_choice="auto",
        response_format={"type": "json_object"},
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for fragment in choice.delta.tool_calls or []:
                entry = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = fragment.id or entry["id"]
                if fragment.function:
                    entry["name"] = fragment.function.name or entry["name"]
                    entry["arguments"] += fragment.function.arguments or ""
    assert finish == "tool_calls"
    assert calls == {
        0: {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        1: {"id": "call_2", "name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
    }
    sent = fake.chat_calls()[-1]["body"]
    assert sent["tools"] == TOOLS
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "again"}], tools=TOOLS
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    called = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in called if c.type == "function"] == ["get_weather", "get_time"]


def test_embeddings_float_and_base64_carry_the_same_vector(
    client: openai.OpenAI, server: AppServer, api_key: str
) -> None:
    as_float = client.embeddings.create(
        model="openai/text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert [d.index for d in as_float.data] == [0, 1]
    raw = httpx2.post(
        server.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {api_key}"},
        json={"model": "openai/text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"},
    ).json()
    decoded = base64.b64decode(raw["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(decoded) // 4}f", decoded)
    assert vector == pytest.approx(as_float.data[0].embedding, rel=1e-6)
    sdk_default = client.embeddings.create(model="openai/text-embedding-3-small", input="a")
    assert sdk_default.data[0].embedding == pytest.approx(as_float.data[0].embedding, rel=1e-6)
    assert as_float.usage.prompt_tokens > 0


def test_models_list_retrieve_and_images(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")
    image = client.images.generate(model="google/gemini-2.5-flash-image-preview", prompt="a kiln")
    assert image.data
    assert base64.b64decode(image.data[0].b64_json or "")[:4] == b"\x89PNG"
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model=MODEL, prompt="a kiln")
    assert refused.value.code == "model_not_supported"


def test_client_errors_are_400_in_openai_shape(
    client: openai.OpenAI, server: AppServer, api_key: str
) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=MODEL, messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="openai/text-embedding-3-small", input="")
    broken = httpx2.post(
        server.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {api_key}"},
    )
    assert broken.status_code == 400
    assert set(broken.json()["error"]) == {"message", "type", "param", "code"}
    bad_type = httpx2.post(
        server.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {api_key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
    )
    assert bad_type.status_code == 400
    assert bad_type.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("messages[0]", {"messages": [{"role": ["user"], "content": "x"}]}),
        (
            "response_format",
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": {}}},
        ),
    ],
)
def test_a_role_or_format_type_that_is_no_string_is_a_400(
    server: AppServer, api_key: str, fake: FakeOpenRouter, field: str, body: dict[str, Any]
) -> None:
    """A list or an object where a name is expected: refused in OpenAI's shape, never sent upstream."""
    fake.reset()
    response = httpx2.post(
        server.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {api_key}"},
        json={"model": MODEL, **body},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert fake.chat_calls() == []


def test_an_unknown_path_or_method_under_v1_answers_in_openai_shape(server: AppServer, api_key: str) -> None:
    """What no route answers (an endpoint this gateway lacks, a method a path does not take) still reads as
    an OpenAI error to OpenAI's SDKs, not as InsForge's."""
    headers = {"authorization": f"Bearer {api_key}"}
    missing = httpx2.post(server.url + "/v1/responses", headers=headers, json={"model": MODEL, "input": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.json()["error"]["code"] == "not_found"
    assert "/v1/responses" in missing.json()["error"]["message"]
    wrong_method = httpx2.delete(server.url + "/v1/models/" + MODEL, headers=headers)
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()["error"]) == {"message", "type", "param", "code"}
    assert "GET" in wrong_method.json()["error"]["message"]


def test_callers_without_a_valid_credential_get_401(server: AppServer) -> None:
    for key in ("kbk_not-a-key", "ik_" + "0" * 64):
        with (
            openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as sdk,
            pytest.raises(openai.AuthenticationError),
        ):
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    anonymous = httpx2.get(server.url + "/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"


def test_upstream_failures_map_to_402_429_502_and_never_leak_the_key(
    client: openai.OpenAI, fake: FakeOpenRouter, sql: SQL
) -> None:
    started = sql("select clock_timestamp() as t")[0]["t"]
    fake.script(Fail(402, "Insufficient credits", metadata={"limit_source": "openrouter_credits"}))
    with pytest.raises(openai.APIStatusError) as credits:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert credits.value.status_code == 402
    fake.script(*[Fail(502, "Provider down")] * 3)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert down.value.status_code == 502
    assert len(fake.chat_calls()) == 1 + 3  # one 402 (never retried), then the first try and two retries
    fake.script(*[Fail(429, "Slow down", headers={"retry-after": "0"})] * 3)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    fake.script(Fail(400, "Incorrect API key provided: sk-proj-abcdef123456. Bearer sk-or-v1-fake rejected"))
    with pytest.raises(openai.BadRequestError) as echoed:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "abcdef123456" not in echoed.value.response.text
    assert "sk-or-v1-fake" not in echoed.value.response.text
    assert "[redacted]" in echoed.value.message
    fake.valid_keys.discard("sk-or-v1-fake")
    try:
        with pytest.raises(openai.APIStatusError) as rejected:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    finally:
        fake.valid_keys.add("sk-or-v1-fake")
    assert rejected.value.status_code == 502
    assert "sk-or-v1-fake" not in rejected.value.response.text
    assert rejected.value.code == "upstream_auth_failed", rejected.value.response.text
    # Only this test's rows: the module's server also holds other tests' errors (a stream that failed
    # after its 200, say), and the ledger writes in the background, so wait for all five to land.
    mine = "select * from ai.usage where status = 'error' and created_at >= %s"
    rows = wait_for(lambda: at_least(5, sql(mine, started)))
    assert sorted(r["http_status"] for r in rows) == [400, 402, 429, 502, 502]
    assert all("sk-or-v1-fake" not in (r["error"] or "") for r in rows)


def test_mid_stream_error_frame_and_malformed_bytes_surface_as_api_errors(
    client: openai.OpenAI, fake: FakeOpenRouter, sql: SQL
) -> None:
    fake.script(MidStreamError(after_chunks=1, message="provider crashed"))
    received: list[Any] = []
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tell me a long story"}], stream=True
    )
    with pytest.raises(openai.APIError) as frame:
        received.extend(stream)
    assert "provider crashed" in frame.value.message
    assert received  # content before the error reached the client
    fake.script(Malformed(after_chunks=1))
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "a long one"}], stream=True
            )
        )
    rows = wait_for(
        lambda: at_least(
            2, sql("select * from ai.usage where status = 'error' and streamed order by created_at")
        )
    )
    assert rows[0]["input_tokens"] > 0  # the usage sent with the error frame is recorded


def test_an_abandoned_stream_cancels_the_upstream_and_is_recorded(
    server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL
) -> None:
    fake.script(Reply(content="x" * 400, chunk_delay=0.5))
    before = int(sql("select count(*) as n from ai.usage where status = 'abandoned'")[0]["n"])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "slow"}], "stream": True}
    with httpx2.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break
    assert wait_for(lambda: "cancelled" in fake.stream_outcomes)
    rows = wait_for(
        lambda: int(sql("select count(*) as n from ai.usage where status = 'abandoned'")[0]["n"]) > before
    )
    assert rows
    row = sql("select * from ai.usage where status = 'abandoned' order by created_at desc limit 1")[0]
    assert row["streamed"] is True
    assert row["input_tokens"] > 0


def test_a_client_leaving_a_non_streaming_call_cancels_it(
    server: AppServer, api_key: str, fake: FakeOpenRouter, sql: SQL
) -> None:
    fake.reset()
    fake.script(Reply(chunk_delay=1.0))  # the fake answers after 4 s
    body = {"model": MODEL, "messages": [{"role": "user", "content": "slow json"}]}
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(
            server.url + "/v1/chat/completions",
            json=body,
            timeout=0.5,
            headers={"authorization": f"Bearer {api_key}"},
        )
    rows = wait_for(lambda: sql("select * from ai.usage where status = 'abandoned' and not streamed"))
    assert rows
    assert rows[0]["latency_ms"] < 3000
