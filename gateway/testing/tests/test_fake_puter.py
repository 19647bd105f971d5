from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from gateway.testing.fake_puter import (
    FakePuter,
    chunk_texts,
    classify_token,
    expected_text,
    expected_usage,
)
from gateway.testing.fake_scenarios import LOREM, ZERO_UUID, Scenario, parse_scenario

JsonDict = dict[str, Any]
HI = [{"role": "user", "content": "Hi there"}]
HI_PROMPT = 9  # 3 + len("Hi there") // 4 + 4
LONG = [{"role": "system", "content": "x" * 200}, {"role": "user", "content": "Hi there"}]
LONG_PROMPT = 63  # 3 + (200 // 4 + 4) + (8 // 4 + 4)
LISTED = ["gpt-5-nano", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "deepseek-chat"]
TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
    {"name": "lookup", "input_schema": {"type": "object"}},
    {"type": "function", "function": {"name": "ignored"}},
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = uvicorn.Config(
        FakePuter(), host="127.0.0.1", port=0, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as http:
        assert http.post("/_fake/reset").json() == {"ok": True}
        yield http


def call_body(model: str = "gpt-4o-mini", token: str | None = "tok-alice", **args: Any) -> JsonDict:
    body: JsonDict = {
        "interface": "puter-chat-completion",
        "driver": "ai-chat",
        "method": "complete",
        "args": {"model": model, "messages": HI, **args},
        "test_mode": False,
    }
    if token is not None:
        body["auth_token"] = token
    return body


def chat(client: httpx.Client, model: str = "gpt-4o-mini", **args: Any) -> httpx.Response:
    return client.post("/drivers/call", json=call_body(model, **args))


def open_stream(
    client: httpx.Client, model: str, **args: Any
) -> AbstractContextManager[httpx.Response]:
    return client.stream("POST", "/drivers/call", json=call_body(model, stream=True, **args))


def stream_events(client: httpx.Client, model: str, **args: Any) -> list[JsonDict]:
    with open_stream(client, model, **args) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [orjson.loads(line) for line in response.iter_lines()]


def stats(client: httpx.Client) -> JsonDict:
    result: JsonDict = client.get("/_fake/stats").json()
    return result


def wait_for_stats(client: httpx.Client, **expected: int) -> JsonDict:
    deadline = time.monotonic() + 3
    current = stats(client)
    while any(current[k] != v for k, v in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.02)
        current = stats(client)
    return current


def text_events(n: int) -> list[JsonDict]:
    return [{"type": "text", "text": text} for text in chunk_texts(n)]


def v2_error(message: str, code: str, **extra: object) -> JsonDict:
    return {"error": message, "message": message, "code": code, **extra}


def normalise(model: str, usage: JsonDict) -> tuple[int, int]:
    """Normalise usage as PUTER.md part A says a client must."""
    if "input_tokens" in usage:
        cache_keys = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
        cached = sum(usage[key] for key in (*cache_keys, "cache_read_input_tokens"))
        return usage["input_tokens"] + cached, usage["output_tokens"]
    subtracts = model.startswith(("gpt-", "gemini-"))
    prompt = usage["prompt_tokens"] + (usage["cached_tokens"] if subtracts else 0)
    return prompt, usage["completion_tokens"] + usage.get("thinking_tokens", 0)


def test_chunk_texts_follow_a_fixed_rule() -> None:
    assert chunk_texts(3) == ["Hello ", "w1 ", "w2 "]
    assert expected_text(5) == "Hello w1 w2 w3 w4 "
    assert expected_text(0) == ""


def test_directives_parse_into_a_scenario() -> None:
    parsed = parse_scenario(["pace50", "CHUNKS8", "errorfirst429", "tools", "nousage"])
    assert parsed == Scenario(
        chunks=8,
        pace_ms=50,
        error_first="429 rate_limit_error: rate limited",
        tools=True,
        no_usage=True,
    )


def test_tokens_are_classified_by_prefix() -> None:
    assert classify_token("v1broke-1").v1 is True
    assert classify_token("v1broke-1").behaviour == "broke"
    assert classify_token("busy-2").behaviour == "busy"
    assert classify_token("tok-alice").behaviour == ""
    assert classify_token("tok-alice").key == "tok-alic"


def test_health_answers(client: httpx.Client) -> None:
    assert client.get("/_fake/health").json() == {"ok": True}


def test_model_list_hides_hidden_ids(client: httpx.Client) -> None:
    response = client.get("/puterai/chat/models")
    assert response.status_code == 200
    assert response.json() == {"models": LISTED}


def test_model_details_describe_each_listed_model(client: httpx.Client) -> None:
    models = client.get("/puterai/chat/models/details").json()["models"]
    assert [model["id"] for model in models] == LISTED
    assert models[1] == {
        "id": "gpt-4o-mini",
        "provider": "openai-completion",
        "aliases": ["GPT 4o mini", "gpt-4o-mini-latest"],
        "modalities": {"input": ["text", "image"], "output": ["text"]},
        "tool_call": True,
        "context": 128_000,
        "max_tokens": 16_384,
        "costs_currency": "usd-cents",
        "input_cost_key": "prompt_tokens",
        "output_cost_key": "completion_tokens",
        "costs": {"tokens": 1_000_000, "prompt_tokens": 15, "completion_tokens": 60},
    }
    assert models[2]["costs"] == {"tokens": 1_000_000, "input_tokens": 300, "output_tokens": 1500}


def test_driver_methods_list_models(client: httpx.Client) -> None:
    for method, expected in (("list", LISTED), ("models", None)):
        body = {**call_body(), "method": method}
        reply = client.post("/drivers/call", json=body).json()
        assert reply["success"] is True
        assert reply["service"] == {"name": "ai-chat"}
        result = reply["result"]
        assert result == expected if expected else [m["id"] for m in result] == LISTED


def test_non_stream_openai_reply_has_choice_and_usage(client: httpx.Client) -> None:
    response = chat(client, "gpt-4o-mini")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "result": {
            "index": 0,
            "message": {"role": "assistant", "content": expected_text(5), "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
            "usage": {
                "prompt_tokens": HI_PROMPT,
                "completion_tokens": 5,
                "cached_tokens": 0,
                "usd_cents": 0.0004,
            },
            "via_ai_chat_service": True,
        },
        "service": {"name": "ai-chat"},
        "metadata": {"service_used": "openai-completion", "providerUsed": "gpt-4o-mini"},
    }


def test_non_stream_claude_reply_is_an_anthropic_message(client: httpx.Client) -> None:
    reply = chat(client, "claude-sonnet-4-5+chunks3").json()
    assert reply["metadata"] == {"service_used": "claude", "providerUsed": "claude-sonnet-4-5"}
    assert reply["result"] == {
        "message": {
            "id": "msg_01FakePuterMessage",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": expected_text(3)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": HI_PROMPT,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
        "usage": {
            "input_tokens": HI_PROMPT,
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
            "usd_cents": 0.01,
        },
        "finish_reason": "stop",
        "via_ai_chat_service": True,
    }


def test_models_match_aliases_case_and_whitespace(client: httpx.Client) -> None:
    for name in (" GPT 4o MINI ", "gpt-4o-mini-latest", "GPT-4O-MINI+chunks2"):
        assert chat(client, name).json()["metadata"]["providerUsed"] == "gpt-4o-mini"


def test_stream_sends_text_then_provider_usage(client: httpx.Client) -> None:
    events = stream_events(client, "gpt-5-nano+chunks3", messages=LONG)
    usage = {"prompt_tokens": LONG_PROMPT - 16, "completion_tokens": 3, "cached_tokens": 16}
    assert events == [*text_events(3), {"type": "usage", "usage": {**usage, "usd_cents": 0.0004}}]
    assert stats(client)["streams_completed"] == 1


def test_deepseek_keeps_cached_tokens_inside_prompt_tokens(client: httpx.Client) -> None:
    usage = stream_events(client, "deepseek-chat+chunks1", messages=LONG)[-1]["usage"]
    assert usage == {
        "prompt_tokens": LONG_PROMPT,
        "completion_tokens": 1,
        "cached_tokens": 16,
        "usd_cents": 0.0004,
    }


def test_gemini_reports_thinking_apart(client: httpx.Client) -> None:
    events = stream_events(client, "gemini-2.5-flash+chunks2+reasoning")
    assert events[:2] == [
        {"type": "reasoning", "reasoning": "think0 "},
        {"type": "reasoning", "reasoning": "think1 "},
    ]
    assert events[2:4] == text_events(2)
    assert events[4]["usage"] == {
        "prompt_tokens": HI_PROMPT,
        "completion_tokens": 2,
        "cached_tokens": 0,
        "thinking_tokens": 3,
        "usd_cents": 0.0002,
    }


@pytest.mark.parametrize("model", [*LISTED, "gemini-2.5-flash+reasoning"])
@pytest.mark.parametrize("messages", [HI, LONG])
def test_expected_usage_matches_the_normalised_usage_line(
    client: httpx.Client, model: str, messages: list[JsonDict]
) -> None:
    events = stream_events(client, f"{model}+chunks4", messages=messages)
    assert events[-1]["type"] == "usage"
    assert normalise(model, events[-1]["usage"]) == expected_usage(f"{model}+chunks4", messages, 4)


def test_paced_stream_events_arrive_one_by_one(client: httpx.Client) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    with open_stream(client, "gpt-4o-mini+chunks3+pace100") as response:
        for _line in response.iter_lines():
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    assert arrivals[0] < 0.09
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(0.08 < gap < 0.3 for gap in gaps), gaps


def test_delay_holds_back_the_headers(client: httpx.Client) -> None:
    started = time.monotonic()
    assert chat(client, "gpt-4o-mini+delay200").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_errorfirst_is_an_error_line_inside_a_200_stream(client: httpx.Client) -> None:
    events = stream_events(client, "claude-sonnet-4-5+errorfirst")
    assert events == [{"type": "error", "message": "529 overloaded_error: Overloaded"}]
    events = stream_events(client, "claude-sonnet-4-5+errorfirst429")
    assert events == [{"type": "error", "message": "429 rate_limit_error: rate limited"}]


def test_errorfirst_without_stream_is_a_json_error(client: httpx.Client) -> None:
    response = chat(client, "claude-sonnet-4-5+errorfirst429")
    assert response.status_code == 429
    attempt = {
        "model": "claude-sonnet-4-5",
        "provider": "claude",
        "status": 429,
        "code": "rate_limit_error",
        "error": "429 rate_limit_error: rate limited",
    }
    message = "AI provider rate limit exceeded"
    assert response.json() == v2_error(message, "upstream_rate_limited", attempts=[attempt])
    too_long = chat(client, "claude-sonnet-4-5+errorfirst400")
    message = "400 invalid_request_error: prompt is too long: 200001 tokens > 200000"
    assert (too_long.status_code, too_long.json()["code"]) == (400, "upstream_bad_request")
    assert too_long.json()["message"] == message


def test_failafter_ends_with_an_error_line_and_no_usage(client: httpx.Client) -> None:
    events = stream_events(client, "gpt-4o-mini+failafter2")
    assert events == [*text_events(2), {"type": "error", "message": "upstream exploded"}]


def test_emptystream_nousage_and_usagebare(client: httpx.Client) -> None:
    assert stream_events(client, "gpt-4o-mini+emptystream") == []
    assert stream_events(client, "gpt-4o-mini+chunks2+nousage") == text_events(2)
    bare = stream_events(client, "claude-sonnet-4-5+chunks1+usagebare")
    assert bare == [*text_events(1), {"type": "usage"}]
    assert "usage" not in chat(client, "gpt-4o-mini+nousage").json()["result"]


def test_hang_ends_when_the_client_leaves(client: httpx.Client) -> None:
    with open_stream(client, "gpt-4o-mini+hangafter2") as response:
        lines = response.iter_lines()
        assert [orjson.loads(next(lines)) for _ in range(2)] == text_events(2)
        assert stats(client)["in_flight"] == 1
    after = wait_for_stats(client, streams_disconnected=1, in_flight=0)
    assert (after["streams_disconnected"], after["in_flight"]) == (1, 0)
    assert after["streams_completed"] == 0


def test_non_stream_hang_waits_until_the_client_gives_up(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post("/drivers/call", json=call_body("gpt-4o-mini+hangafter1"), timeout=0.2)
    after = wait_for_stats(client, streams_disconnected=1, in_flight=0)
    assert (after["streams_disconnected"], after["in_flight"]) == (1, 0)


def test_fast_mode_records_no_bodies() -> None:
    async def run() -> JsonDict:
        transport = httpx.ASGITransport(app=FakePuter(fast=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
            assert (await http.post("/drivers/call", json=call_body())).status_code == 200
            stats: JsonDict = (await http.get("/_fake/stats")).json()
            return stats

    recorded = asyncio.run(run())["requests"]
    assert [(entry["path"], entry["body"]) for entry in recorded] == [("/drivers/call", None)]


def _stream_writes(app: FakePuter, model: str) -> list[bytes]:
    """The body messages of one stream, as the app sent them (httpx's ASGI transport would
    join them)."""
    request = orjson.dumps(call_body(model, stream=True))
    scope = {"type": "http", "method": "POST", "path": "/drivers/call", "headers": [
        (b"content-type", b"application/json"), (b"host", b"fake")]}  # fmt: skip
    writes: list[bytes] = []

    async def run() -> None:
        sent = asyncio.Event()
        messages = [{"type": "http.request", "body": request, "more_body": False}]

        async def receive() -> JsonDict:
            if messages:
                return messages.pop()
            await sent.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                writes.append(message["body"])

        await app(scope, receive, send)
        sent.set()

    asyncio.run(run())
    return writes


def test_fast_mode_sends_an_unpaced_streams_lines_in_one_write() -> None:
    fast = _stream_writes(FakePuter(fast=True), "gpt-4o-mini+chunks20")
    usual = _stream_writes(FakePuter(), "gpt-4o-mini+chunks20")
    assert len(fast) == 1
    assert len(usual) > 20  # twenty texts, then the usage line
    assert fast == [b"".join(usual)]
    paced = _stream_writes(FakePuter(fast=True), "gpt-4o-mini+chunks3+pace5")
    assert len(paced) == len(b"".join(paced).splitlines()) > 3  # paced: line by line


def test_concurrent_calls_are_counted_per_token(client: httpx.Client) -> None:
    with (
        open_stream(client, "gpt-4o-mini+hangafter1", token="tok-concurrent") as first,
        open_stream(client, "gpt-4o-mini+hangafter1", token="tok-concurrent") as second,
    ):
        # Keep the line iterators alive: dropping one closes its response.
        readers = [first.iter_lines(), second.iter_lines()]
        assert [orjson.loads(next(reader)) for reader in readers] == text_events(1) * 2
        assert chat(client, token="other-token").status_code == 200
    after = wait_for_stats(client, streams_disconnected=2, in_flight=0)
    assert after["calls"] == 3
    assert after["max_in_flight"] == 3
    assert after["max_in_flight_by_token"] == {"tok-conc": 2, "other-to": 1}


@pytest.mark.parametrize(
    ("token", "status", "body"),
    [
        (None, 401, v2_error("Missing authentication token", "token_missing")),
        ("bad-1", 401, v2_error("Authentication failed", "token_auth_failed")),
        ("broke-1", 402, v2_error("No usage left for request.", "insufficient_funds")),
        ("busy-1", 429, v2_error("Too many requests.", "too_many_requests")),
        ("crash-1", 500, v2_error("Internal Server Error", "internal_error")),
    ],
)
def test_token_behaviours(
    client: httpx.Client, token: str | None, status: int, body: JsonDict
) -> None:
    response = client.post("/drivers/call", json=call_body(token=token))
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers.get("x-needs-upgrade") == ("true" if status == 402 else None)
    assert "retry-after" not in response.headers


def test_header_tokens_get_the_same_behaviours(client: httpx.Client) -> None:
    body = call_body(token=None)
    broke = client.post("/drivers/call", json=body, headers={"Authorization": "Bearer broke-2"})
    assert broke.status_code == 402
    busy = client.post("/drivers/call", json=body, headers={"x-api-key": "busy-2"})
    assert busy.status_code == 429
    assert client.post("/drivers/call", json=body, headers={"x-api-key": "ok-2"}).status_code == 200
    bearer_in_body = client.post("/drivers/call", json=call_body(token="Bearer bad-3"))
    assert bearer_in_body.json()["code"] == "token_auth_failed"


def test_requests_are_recorded_with_secrets_redacted(client: httpx.Client) -> None:
    headers = {"Authorization": "Bearer tok-secret-value"}
    client.post("/drivers/call", json=call_body(token="tok-secret-value"), headers=headers)
    recorded = stats(client)["requests"][-1]
    assert recorded["path"] == "/drivers/call"
    assert recorded["headers"]["authorization"] == "Bearer tok-secr..."
    assert recorded["body"] == call_body(token="tok-secr...")


def test_reset_zeroes_the_counters(client: httpx.Client) -> None:
    chat(client)
    client.post("/_fake/reset")
    assert stats(client) == {
        "calls": 0,
        "in_flight": 0,
        "max_in_flight": 0,
        "in_flight_by_token": {},
        "max_in_flight_by_token": {},
        "streams_completed": 0,
        "connections": [],
        "streams_disconnected": 0,
        "last_stream_line_times": [],
        "requests": [],
    }


def test_v1_token_needs_a_legacy_driver(client: httpx.Client) -> None:
    response = chat(client, token="v1-tok")
    assert response.status_code == 200
    assert response.json() == {
        "success": False,
        "error": "Calling ai-chat directly is not yet supported",
    }


def test_v1_reply_has_array_usage_and_streams_have_none(client: httpx.Client) -> None:
    body = {**call_body("gpt-4o-mini+chunks2", token="v1-tok"), "driver": "openai-completion"}
    reply = client.post("/drivers/call", json=body).json()
    assert reply["metadata"] == {"service_used": "openai-completion"}
    assert reply["result"]["usage"] == [
        {"type": "prompt", "model": "gpt-4o-mini", "amount": HI_PROMPT, "cost": 0},
        {"type": "completion", "model": "gpt-4o-mini", "amount": 2, "cost": 0},
    ]
    body["args"]["stream"] = True
    with client.stream("POST", "/drivers/call", json=body) as response:
        assert [orjson.loads(line) for line in response.iter_lines()] == text_events(2)


def test_v1_errors_come_back_as_200_envelopes(client: httpx.Client) -> None:
    body = {**call_body("claude-sonnet-4-5", token="v1broke-1"), "driver": "claude"}
    response = client.post("/drivers/call", json=body)
    error = {
        "$": "heyputer:api/APIError",
        "code": "insufficient_funds",
        "message": "Available funding is insufficient for this request.",
        "status": 402,
    }
    assert (response.status_code, response.json()) == (200, {"success": False, "error": error})
    assert "x-needs-upgrade" not in response.headers
    mismatch = client.post("/drivers/call", json={**body, "auth_token": "v1-tok", "driver": None})
    assert mismatch.status_code == 200
    assert mismatch.json()["error"]["code"] == "field_invalid"
    bad = client.post("/drivers/call", json={**body, "auth_token": "v1bad"})
    assert (bad.status_code, bad.json()) == (
        401,
        {"message": "Authentication failed.", "code": "token_auth_failed"},
    )


def test_legacy_driver_name_is_not_found_on_v2(client: httpx.Client) -> None:
    response = client.post("/drivers/call", json={**call_body(), "driver": "openai-completion"})
    message = "Driver not found: puter-chat-completion:openai-completion"
    assert (response.status_code, response.json()) == (404, v2_error(message, "not_found"))


def test_unknown_models_and_directives_are_bad_requests(client: httpx.Client) -> None:
    response = chat(client, "gpt-9")
    assert (response.status_code, response.json()) == (
        400,
        v2_error("Model not found: gpt-9", "bad_request"),
    )
    typo = chat(client, "gpt-4o-mini+pase50")
    assert (typo.status_code, typo.json()) == (
        400,
        v2_error("Unknown scenario directive: pase50", "bad_request"),
    )


def test_down_and_http500(client: httpx.Client) -> None:
    down = chat(client, "deepseek-chat+down", stream=True)
    attempt = {
        "model": "deepseek-chat",
        "provider": "deepseek",
        "status": 502,
        "code": "server_error",
        "error": "bad gateway",
    }
    expected = v2_error("AI provider unavailable", "upstream_provider_unavailable")
    assert (down.status_code, down.json()) == (400, {**expected, "attempts": [attempt]})
    crashed = chat(client, "gpt-4o-mini+http500")
    expected = v2_error("Internal Server Error", "internal_error")
    assert (crashed.status_code, crashed.json()) == (500, expected)


def test_request_shape_errors(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    malformed = client.post("/drivers/call", content=b"{nope", headers=headers)
    expected = v2_error("Malformed JSON in request body", "client_bad_json")
    assert (malformed.status_code, malformed.json()) == (400, expected)
    body = call_body()
    del body["interface"]
    missing = client.post("/drivers/call", json=body)
    assert (missing.status_code, missing.json()["code"]) == (400, "bad_request")
    headers = {"content-type": "text/plain;actually=json"}
    plain = client.post("/drivers/call", content=orjson.dumps(call_body()), headers=headers)
    assert plain.json()["success"] is True


def test_max_tokens_truncates_the_reply(client: httpx.Client) -> None:
    openai = chat(client, "gpt-4o-mini", max_tokens=2).json()["result"]
    assert (openai["message"]["content"], openai["finish_reason"]) == (expected_text(2), "length")
    assert openai["usage"]["completion_tokens"] == 2
    claude = chat(client, "claude-sonnet-4-5", max_tokens=2).json()["result"]["message"]
    assert (claude["content"][0]["text"], claude["stop_reason"]) == (expected_text(2), "max_tokens")
    events = stream_events(client, "gpt-4o-mini", max_tokens=2)
    assert events[:-1] == text_events(2)
    assert events[-1]["usage"]["completion_tokens"] == 2


def test_tools_become_tool_calls_for_the_first_two_tools(client: httpx.Client) -> None:
    result = chat(client, "gpt-4o-mini+chunks1+tools", tools=TOOLS).json()["result"]
    assert result["finish_reason"] == "tool_calls"
    assert result["message"]["tool_calls"] == [
        {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": '{"q":"x"}'}}
        for i, n in enumerate(("search", "lookup"))
    ]
    claude = chat(client, "claude-sonnet-4-5+chunks1+tools", tools=TOOLS).json()["result"]
    assert claude["message"]["stop_reason"] == "tool_use"
    assert claude["message"]["content"][1:] == [
        {"type": "tool_use", "id": "call_0", "name": "search", "input": {"q": "x"}},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
    ]


def test_streamed_tools_follow_the_text(client: httpx.Client) -> None:
    events = stream_events(client, "gpt-4o-mini+chunks1+tools", tools=TOOLS)
    assert events[:3] == [
        *text_events(1),
        {"type": "tool_use", "id": "call_0", "name": "search", "input": {"q": "x"}, "text": ""},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}, "text": ""},
    ]
    assert events[3]["type"] == "usage"
    assert stream_events(client, "gpt-4o-mini+chunks1+tools")[1]["type"] == "usage"


def test_substitute_answers_lorem_ipsum_from_fake(client: httpx.Client) -> None:
    reply = chat(client, "claude-sonnet-4-5+substitute").json()
    assert reply["metadata"] == {"service_used": "fake-chat", "providerUsed": "fake"}
    message = reply["result"]["message"]
    assert (message["id"], message["model"]) == (ZERO_UUID, "fake")
    assert message["content"] == [{"type": "text", "text": LOREM}]
    assert reply["result"]["usage"] == {"input_tokens": 0, "output_tokens": 1}
    assert stream_events(client, "gpt-4o-mini+substitute") == [
        {"type": "text", "text": LOREM},
        {"type": "usage", "usage": {"usd_cents": None}},
    ]
    assert chat(client, "fake").json()["metadata"]["service_used"] == "fake-chat"
