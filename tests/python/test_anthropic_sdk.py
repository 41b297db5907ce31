"""The official `anthropic` Python package against Ferryman's `/v1/messages`: whole and streamed
messages on any deployment (here the built-in mock), usage and cost, and the SDK's typed errors."""

import anthropic
import pytest
from anthropic import Anthropic


def test_messages_whole_and_streamed(sqlite_gateway):
    gw = sqlite_gateway
    key = gw.create_key(key_alias="claude-app", models=["demo"])
    client = Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)

    message = client.messages.create(
        model="demo",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "hello from the anthropic sdk"}],
        metadata={"user_id": "anthropic-customer"},
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert "hello from the anthropic sdk" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    with client.messages.stream(
        model="demo", max_tokens=64, messages=[{"role": "user", "content": "stream it please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "stream it please" in text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0

    # Both calls are governed and recorded like any other: under the key, for the customer.
    logs = gw.spend_logs({"api_key": key["token"]}, 2)
    assert len(logs) == 2
    assert {r["end_user"] for r in logs} == {"anthropic-customer", None}
    assert sum(r["completion_tokens"] for r in logs if r["end_user"] is None) == final.usage.output_tokens


def test_errors_arrive_as_the_sdks_types(sqlite_gateway):
    gw = sqlite_gateway
    bad = Anthropic(base_url=gw.url, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="demo", max_tokens=8, messages=[{"role": "user", "content": "hi"}])

    key = gw.create_key(models=["demo"], max_budget=0.0)
    client = Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="demo", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert "Budget" in refused.value.message

    open_key = gw.create_key(models=["demo"])
    client = Anthropic(base_url=gw.url, api_key=open_key["key"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as invalid:
        client.messages.create(model="demo", max_tokens=8, messages=[{"role": "system", "content": "hi"}])
    assert "messages[0].role" in invalid.value.message
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="other", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["error"]["type"] == "not_found_error"
