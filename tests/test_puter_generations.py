"""Puter's wire generations and quirks over real HTTP: v1 drivers, limits, substitutions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionToolParam

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream, UpstreamState
from gateway.testing.fake_scenarios import (
    LOREM,
    REASONING_TEXTS,
    TOOL_INPUT,
    chunk_texts,
    expected_text,
    expected_usage,
    prompt_tokens,
)
from gateway.tokens import count_messages, count_text
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me something."}]
V1_TOKEN = "v1ok-legacy-token"
RATE_LIMITED = {
    "message": "Every upstream is rate limited; retry shortly.",
    "type": "rate_limit_error",
    "param": None,
    "code": "rate_limit_exceeded",
}
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]


def chat(gateway: Gateway, key: str, model: str, *, stream: bool, **extra: Any) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": model, "messages": MESSAGES, "stream": stream, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def events_of(reply: httpx.Response) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:])
        for line in reply.text.splitlines()
        if line.startswith("data: ")
    ]


def deltas_of(events: list[Any]) -> list[tuple[str, str]]:
    """(field, text) of every non-empty content or reasoning delta, in order."""
    found: list[tuple[str, str]] = []
    for event in events:
        if not isinstance(event, dict) or not event.get("choices"):
            continue
        delta = event["choices"][0]["delta"]
        found += [
            (name, delta[name]) for name in ("reasoning_content", "content") if delta.get(name)
        ]
    return found


def calls_of(fake: Fake, token: str = "") -> list[dict[str, Any]]:
    """Bodies of the /drivers/call requests the fake received (with `token`), oldest first."""
    bodies = [r["body"] for r in fake.stats()["requests"] if r["path"] == "/drivers/call"]
    # The fake keeps only the first 8 characters of a token.
    return [body for body in bodies if body["auth_token"].startswith(token[:8])]


def api_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "api_error", "param": None, "code": code}}


# --- v1 -----------------------------------------------------------------------------------


def test_v1_upstream_answers_through_the_legacy_driver_with_the_v1_usage_summed(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(token=V1_TOKEN)
    reply = chat(gateway, alice_key, "gpt-4o-mini", stream=False)
    prompt = prompt_tokens(MESSAGES)
    assert reply.status_code == 200
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == expected_text(5)
    assert body["choices"][0]["finish_reason"] == "stop"
    # The v1 array held {"type": "prompt", "amount": prompt} and {"type": "completion", 5}.
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 5,
        "total_tokens": prompt + 5,
    }
    assert [call["driver"] for call in calls_of(fake, V1_TOKEN)] == ["ai-chat", "openai-completion"]
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.OK, 200)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, 5)
    assert row.usage_estimated is False
    assert row.usd_cents is None


def test_v1_upstream_streams_through_the_legacy_driver_with_estimated_usage(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(token=V1_TOKEN)
    reply = chat(gateway, alice_key, "gpt-4o-mini", stream=True)
    events = events_of(reply)
    assert reply.status_code == 200
    assert deltas_of(events) == [("content", text) for text in chunk_texts(5)]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"
    assert [call["driver"] for call in calls_of(fake, V1_TOKEN)] == ["ai-chat", "openai-completion"]
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.OK, 200)
    # A v1 stream has no usage line: the row is counted by the gateway.
    assert row.usage_estimated is True
    assert row.prompt_tokens == count_messages(MESSAGES)
    assert row.completion_tokens == count_text(expected_text(5))


def test_v1_upstream_is_remembered_so_the_next_call_goes_straight_to_the_legacy_driver(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(token=V1_TOKEN)
    first = chat(gateway, alice_key, "gpt-4o-mini", stream=False)
    second = chat(gateway, alice_key, "gpt-4o-mini", stream=True)
    assert (first.status_code, second.status_code) == (200, 200)
    assert events_of(second)[-1] == "[DONE]"
    drivers = [call["driver"] for call in calls_of(fake, V1_TOKEN)]
    assert drivers == ["ai-chat", "openai-completion", "openai-completion"]


# --- rate limits --------------------------------------------------------------------------


def test_a_rate_limited_upstream_is_a_429_with_retry_after_and_cools(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    upstream = make_upstream(token="busy-token")
    reply = chat(gateway, alice_key, "gpt-4o-mini", stream=False)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": RATE_LIMITED}
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 429)
    upstream.refresh_from_db()
    assert upstream.state == UpstreamState.COOLING
    assert upstream.cooldown_until is not None
    assert upstream.consecutive_failures == 1
    assert upstream.last_error == "Too many requests."


def test_a_rate_limit_as_the_first_stream_line_is_a_429_with_one_upstream(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = chat(gateway, alice_key, "claude-sonnet-4-5+errorfirst429", stream=True)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": RATE_LIMITED}
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 429)
    upstream.refresh_from_db()
    assert upstream.state == UpstreamState.COOLING


# --- silent substitutions and empty streams -----------------------------------------------


def test_a_substituted_answer_is_a_502_and_an_upstream_error_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = chat(gateway, alice_key, "gpt-4o-mini+substitute", stream=False)
    message = "The upstream failed: the upstream replaced the answer"
    assert reply.status_code == 502
    assert reply.json() == api_error(message, "upstream_error")
    assert LOREM not in reply.text
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 502)
    assert row.error == message
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    upstream.refresh_from_db()
    assert upstream.consecutive_failures == 1
    assert upstream.state == UpstreamState.HEALTHY


def test_a_substituted_stream_ends_with_an_error_event_and_no_done(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = chat(gateway, alice_key, "gpt-4o-mini+substitute", stream=True)
    events = events_of(reply)
    assert reply.status_code == 200
    assert "[DONE]" not in events
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert deltas_of(events) == [("content", LOREM)]
    assert events[-1] == api_error("the upstream replaced the answer", "upstream_error")
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 200)
    assert row.error == "the upstream replaced the answer"
    assert row.completion_tokens == count_text(LOREM)
    assert row.usage_estimated is True


def test_a_stream_that_ends_without_a_line_is_a_502_before_the_first_byte(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = chat(gateway, alice_key, "gpt-4o-mini+emptystream", stream=True)
    message = "The upstream failed: the upstream stream ended before any event"
    assert reply.status_code == 502
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == api_error(message, "upstream_error")
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 502)
    assert row.error == message


# --- tools, reasoning, images -------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini+tools", "claude-sonnet-4-5+tools"])
def test_sdk_reads_tool_calls_from_a_non_streaming_reply(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream, model: str
) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=alice_key, max_retries=0)
    completion = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": MESSAGES[0]["content"]}], tools=TOOLS
    )
    choice = completion.choices[0]
    arguments = orjson.dumps(TOOL_INPUT).decode()
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == expected_text(5)
    calls = choice.message.tool_calls or []
    assert len(calls) == 2
    assert [
        (call.id, call.type, call.function.name, call.function.arguments)
        for call in calls
        if isinstance(call, ChatCompletionMessageFunctionToolCall)
    ] == [
        ("call_0", "function", "get_weather", arguments),
        ("call_1", "function", "get_time", arguments),
    ]
    prompt, completion_tokens = expected_usage(model, MESSAGES, 5)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        prompt,
        completion_tokens,
    )
    assert calls_of(fake)[-1]["args"]["tools"] == TOOLS


def test_reasoning_deltas_stream_before_the_content(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = chat(gateway, alice_key, "deepseek-chat+reasoning", stream=True)
    events = events_of(reply)
    assert reply.status_code == 200
    assert deltas_of(events) == [
        *(("reasoning_content", text) for text in REASONING_TEXTS),
        *(("content", text) for text in chunk_texts(5)),
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"
    row = UsageLog.objects.get()
    assert (row.prompt_tokens, row.completion_tokens) == expected_usage(
        "deepseek-chat+reasoning", MESSAGES, 5
    )
    assert row.usage_estimated is False


def test_claude_receives_a_data_url_image_as_a_base64_block_and_temperature_1(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == expected_text(5)
    assert calls_of(fake)[-1]["args"] == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": "iVBORw0KGgo=",
                        },
                    },
                ],
            }
        ],
        "stream": False,
        "temperature": 1.0,
    }
