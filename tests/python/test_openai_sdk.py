"""The official `openai` Python package against Ferryman: whole and streamed completions,
the gateway's headers, spend records, and the SDK's typed errors."""

import openai
import pytest
from openai import OpenAI

# The demo deployment's prices, femto-USD per token.
DEMO_IN = 150_000_000
DEMO_OUT = 600_000_000


def expected_nanos(prompt, completion):
    return (prompt * DEMO_IN + completion * DEMO_OUT + 500_000) // 1_000_000


def test_chat_completion_whole_and_streamed(gateway):
    key = gateway.create_key(key_alias="py-app", models=["demo"])
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=key["key"], max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model="demo",
        messages=[{"role": "user", "content": "hello from python"}],
        user="py-customer",
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert "hello from python" in completion.choices[0].message.content
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    nanos = expected_nanos(usage.prompt_tokens, usage.completion_tokens)
    assert raw.headers["x-ferryman-response-cost"] == f"{nanos / 1e9:.9f}".rstrip("0")
    assert raw.headers["x-ferryman-model-id"] == "demo-mock-1"
    call_id = raw.headers["x-ferryman-call-id"]
    assert float(raw.headers["x-ferryman-overhead-duration-ms"]) >= 0

    stream = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream it" in text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]

    # Without include_usage the SDK sees no usage chunk.
    plain = list(
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert all(c.usage is None for c in plain)

    logs = gateway.spend_logs({"api_key": key["token"]}, 3)
    assert len(logs) == 3
    first = next(r for r in logs if r["request_id"] == call_id)
    assert first["spend_nanos"] == nanos
    assert first["end_user"] == "py-customer"
    assert first["prompt_tokens"] == usage.prompt_tokens
    assert sorted(r["call_type"] for r in logs) == [
        "chat_completion",
        "stream_chat_completion",
        "stream_chat_completion",
    ]


def test_sdk_errors_are_typed(sqlite_gateway):
    gw = sqlite_gateway
    bad = OpenAI(base_url=f"{gw.url}/v1", api_key="sk-not-a-real-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert "sk-not-a-real-key" not in str(e.value)

    key = gw.create_key()
    client = OpenAI(base_url=f"{gw.url}/v1", api_key=key["key"], max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo", messages=[])
    assert e.value.param == "messages"
    assert e.value.body["type"] == "invalid_request_error"

    limited = gw.create_key(models=["other"])
    client = OpenAI(base_url=f"{gw.url}/v1", api_key=limited["key"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "key_model_access_denied"

    with pytest.raises(openai.RateLimitError):
        client = OpenAI(base_url=f"{gw.url}/v1", api_key=key["key"], max_retries=0)
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}], extra_body={"mock_error": 429}
        )


def test_legacy_completions_whole_and_streamed(sqlite_gateway):
    gw = sqlite_gateway
    key = gw.create_key(models=["demo"])
    client = OpenAI(base_url=f"{gw.url}/v1", api_key=key["key"], max_retries=0)
    completion = client.completions.create(model="demo", prompt="complete this sentence", max_tokens=32)
    assert completion.object == "text_completion"
    assert "complete this sentence" in completion.choices[0].text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    stream = client.completions.create(
        model="demo", prompt="stream a completion", max_tokens=32, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
        if chunk.usage:
            usage = chunk.usage
    assert "stream a completion" in text
    assert usage.completion_tokens > 0

    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="demo", prompt="x", echo=True)
    assert "echo" in refused.value.message
    logs = gw.spend_logs({"api_key": key["token"]}, 2)
    assert len(logs) == 2
