"""The OpenAI-compatible provider's wire, unit by unit: URLs, bodies, errors, SSE and results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from gateway.providers.base import (
    Event,
    FailureKind,
    Finish,
    ReasoningDelta,
    StreamFailed,
    TextDelta,
    ToolCallEvent,
    UpstreamFailure,
    UpstreamTarget,
    Usage,
    UsageEvent,
)
from gateway.providers.openai import (
    SseStream,
    chat_result,
    classify,
    endpoint,
    request_body,
    retry_after,
)


def target(base_url: str) -> UpstreamTarget:
    return UpstreamTarget(1, "oa", "openai", base_url, "key", "oa", 1, 3, 0, ())


@pytest.mark.parametrize(
    "base_url",
    ["http://vllm:8000", "http://vllm:8000/", "http://vllm:8000/v1", "http://vllm:8000/v1/"],
)
def test_a_base_url_with_or_without_v1_reaches_the_same_endpoint(base_url: str) -> None:
    assert endpoint(target(base_url), "/chat/completions") == "http://vllm:8000/v1/chat/completions"


def test_streams_always_ask_for_usage_and_complete_calls_never_send_stream_options() -> None:
    request = {"model": "m", "messages": [], "stream_options": {"include_usage": False}, "x": 1}
    assert request_body(request, stream=True) == {
        "model": "m",
        "messages": [],
        "stream": True,
        "stream_options": {"include_usage": True},
        "x": 1,
    }
    assert request_body(request, stream=False) == {
        "model": "m",
        "messages": [],
        "stream": False,
        "x": 1,
    }


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, "auth"),
        (403, {"error": {"message": "Your organization is suspended"}}, "auth"),
        (403, {"error": {"message": "You may not use the model o1"}}, "forbidden_model"),
        (402, {"error": {"message": "Payment required"}}, "quota"),
        (429, {"error": {"message": "Quota", "type": "insufficient_quota"}}, "quota"),
        (429, {"error": {"message": "Slow down", "code": "rate_limit_exceeded"}}, "rate_limited"),
        (404, {"error": {"message": "The model `x` does not exist"}}, "model_not_found"),
        (404, {"object": "error", "message": "model 'x' not found"}, "model_not_found"),
        (404, "404 page not found", "server"),
        (400, {"error": {"message": "messages must be a list"}}, "bad_request"),
        (422, {"detail": "unprocessable"}, "bad_request"),
        (500, {"error": {"message": "The server had an error"}}, "server"),
        (503, "<html>bad gateway</html>", "server"),
    ],
)
def test_http_errors_are_classified_for_the_pool(status: int, body: object, kind: str) -> None:
    failure = classify(status, body, 2.0)
    assert (failure.kind.value, failure.status, failure.retry_after) == (kind, status, 2.0)
    assert failure.message


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(httpx.Headers(headers)) == seconds


def test_a_complete_reply_becomes_a_result_with_tool_calls_reasoning_and_usage() -> None:
    body = {
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    result = chat_result(body)
    assert (result.content, result.reasoning, result.finish_reason) == ("", "hmm", "tool_calls")
    assert result.tool_calls == [ToolCallEvent("c1", "f", "{}")]
    assert result.usage == Usage(7, 3)
    assert result.served_model == "served-model"


def test_a_reply_without_choices_is_an_upstream_failure() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        chat_result({"object": "error"})
    assert caught.value.kind is FailureKind.SERVER


def sse_response(raw: bytes, piece: int) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), piece):
            yield raw[start : start + piece]

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def sse(*events: object) -> bytes:
    lines = [b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) for e in events]
    return b"\r\n\r\n".join(lines) + b"\r\n\r\n"


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def read_all(raw: bytes, piece: int) -> list[Event]:
    stream = SseStream(sse_response(raw, piece))
    await stream.start()
    try:
        return [event async for event in stream.events()]
    finally:
        await stream.aclose()


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_stream_cut_anywhere_gives_the_same_events_with_whole_tool_calls(piece: int) -> None:
    call = {
        "index": 0,
        "id": "call_0",
        "type": "function",
        "function": {"name": "look", "arguments": ""},
    }
    raw = b": keep-alive\n\n" + sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think "}),
        chunk({"content": "Hello "}),
        chunk({"content": "world"}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
        b"[DONE]",
    )
    assert asyncio.run(read_all(raw, piece)) == [
        ReasoningDelta("think "),
        TextDelta("Hello "),
        TextDelta("world"),
        ToolCallEvent("call_0", "look", '{"q":"x"}'),
        Finish("tool_calls"),
        UsageEvent(Usage(5, 4)),
    ]


def test_an_error_event_mid_stream_ends_it() -> None:
    raw = sse(chunk({"content": "Hi"}), {"error": {"message": "boom", "type": "server_error"}})
    assert asyncio.run(read_all(raw, 64)) == [TextDelta("Hi"), StreamFailed("boom")]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "429 rate_limit_error: rate limited"}, FailureKind.RATE_LIMITED),
        ({"message": "You exceeded your quota", "code": "insufficient_quota"}, FailureKind.QUOTA),
        ({"message": "529 overloaded_error: Overloaded"}, FailureKind.SERVER),
    ],
)
def test_an_error_before_any_answer_is_a_failure_before_the_first_byte(
    error: dict[str, str], kind: FailureKind
) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        asyncio.run(read_all(sse({"error": error}, chunk({"role": "assistant"})), 64))
    assert caught.value.kind is kind


def test_an_error_after_the_role_chunk_is_a_failure_midway() -> None:
    # The role chunk says the upstream took the request; the client's first byte goes out
    # with it, without waiting for the first token.
    raw = sse(chunk({"role": "assistant"}), {"error": {"message": "529 overloaded_error: x"}})
    assert asyncio.run(read_all(raw, 64)) == [StreamFailed("529 overloaded_error: x")]


def test_a_stream_that_ends_before_any_chunk_is_a_failure() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        asyncio.run(read_all(sse(b"[DONE]"), 64))
    assert caught.value.kind is FailureKind.SERVER
