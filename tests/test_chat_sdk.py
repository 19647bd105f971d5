"""The official `openai` SDK, sync and async, against the gateway against the fake Puter."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from accounts.models import UsageLog, UsageStatus
from gateway.testing.fake_scenarios import chunk_texts, expected_text, expected_usage
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway, please."},
]


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def test_sdk_non_streaming_completion_is_well_formed(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: object
) -> None:
    raw = client(gateway, alice_key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    completion = raw.parse()
    prompt, completion_tokens = expected_usage("gpt-4o-mini", MESSAGES, 5)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == expected_text(5)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt
    assert completion.usage.completion_tokens == completion_tokens
    assert completion.usage.total_tokens == prompt + completion_tokens
    row = UsageLog.objects.get()
    assert row.request_id == raw.headers["x-request-id"]
    assert row.status == UsageStatus.OK
    assert row.http_status == 200
    assert row.stream is False
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion_tokens)
    assert row.usage_estimated is False
    assert row.model == "gpt-4o-mini"
    assert row.upstream_model == "gpt-4o-mini"
    assert row.upstream is not None
    assert row.upstream.label == "puter-main"


def test_sdk_stream_with_include_usage_ends_with_the_fakes_exact_usage(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: object
) -> None:
    stream = client(gateway, alice_key).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    prompt, completion_tokens = expected_usage("claude-sonnet-4-5", MESSAGES, 5)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert contents == chunk_texts(5)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"claude-sonnet-4-5"}
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == prompt
    assert chunks[-1].usage.completion_tokens == completion_tokens
    row = UsageLog.objects.get()
    assert (row.status, row.stream, row.usage_estimated) == (UsageStatus.OK, True, False)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion_tokens)
    assert row.ttft_ms is not None


def test_sdk_stream_without_include_usage_has_no_usage_chunk(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: object
) -> None:
    chunks = list(
        client(gateway, alice_key).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text(5)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert UsageLog.objects.get().status == UsageStatus.OK


def test_async_sdk_streams_and_completes(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: object
) -> None:
    async def run() -> tuple[str, str, int]:
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=alice_key, max_retries=0) as sdk:
            done = await sdk.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES)
            stream = await sdk.chat.completions.create(
                model="gemini-2.5-flash+reasoning",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            texts: list[str] = []
            last_usage = 0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    texts.append(chunk.choices[0].delta.content)
                if chunk.usage is not None:
                    last_usage = chunk.usage.completion_tokens
            return done.choices[0].message.content or "", "".join(texts), last_usage

    content, streamed, completion_tokens = asyncio.run(run())
    assert content == expected_text(5)
    assert streamed == expected_text(5)
    # Gemini's thinking tokens count as completion tokens.
    assert completion_tokens == expected_usage("gemini-2.5-flash+reasoning", MESSAGES, 5)[1]
    assert completion_tokens == 8
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 2


def test_stream_without_upstream_usage_is_estimated(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: object
) -> None:
    chunks = list(
        client(gateway, alice_key).chat.completions.create(
            model="gpt-4o-mini+nousage",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    row = UsageLog.objects.get()
    assert row.usage_estimated is True
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert usage.completion_tokens > 0
    assert usage.prompt_tokens > 0
