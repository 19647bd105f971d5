"""Puter's wire format in and out (PUTER.md part A and B 2, 7, 10, 14): pure functions only."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.providers.base import ChatResult, FailureKind, ToolCallEvent, UpstreamFailure, Usage
from gateway.providers.puter_wire import (
    chat_args,
    chat_result,
    classify,
    classify_stream_error,
    convert_messages,
    error_details,
    is_driver_style_error,
    legacy_driver,
    normalize_usage,
)

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
USER = {"role": "user", "content": "Hi"}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def failure_fields(failure: UpstreamFailure) -> tuple[FailureKind, str, int | None, float | None]:
    return failure.kind, failure.message, failure.status, failure.retry_after


# --- normalize_usage --------------------------------------------------------------------


OPENAI_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 16, "usd_cents": 0.4}


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "GPT-4o-mini",
        "o1-mini",
        "o3",
        "o4-mini",
        "chatgpt-4o-latest",
        "gemini-2.5-flash",
        "llama-4-maverick",
        "grok-3",
        "openrouter:openai/gpt-4o",
        "openai/gpt-5-nano",
    ],
)
def test_usage_adds_cached_tokens_back_for_families_that_subtract_them(model: str) -> None:
    assert normalize_usage(OPENAI_USAGE, model) == Usage(26, 5, 0.4)


@pytest.mark.parametrize(
    "model",
    [
        "deepseek-chat",
        "deepseek-reasoner",
        "mistral-large-latest",
        "qwen-max",
        "glm-4.6",
        "kimi-k2",
        "minimax-m2",
        "openrouter:deepseek/deepseek-chat",
    ],
)
def test_usage_keeps_prompt_tokens_for_families_that_count_cached_inside(model: str) -> None:
    usage = {"prompt_tokens": 26, "completion_tokens": 5, "cached_tokens": 16}
    assert normalize_usage(usage, model) == Usage(26, 5, None)


def test_claude_usage_sums_input_and_cache_fields_and_ignores_thinking_tokens() -> None:
    usage = {
        "input_tokens": 20,
        "ephemeral_5m_input_tokens": 3,
        "ephemeral_1h_input_tokens": 2,
        "cache_read_input_tokens": 7,
        "output_tokens": 8,
        "thinking_tokens": 4,
        "usd_cents": 0.01,
    }
    assert normalize_usage(usage, "claude-sonnet-4-5") == Usage(32, 8, 0.01)


def test_claude_usage_of_a_vendor_prefixed_id_is_claudes() -> None:
    usage = {"input_tokens": 20, "cache_read_input_tokens": 7, "output_tokens": 8}
    assert normalize_usage(usage, "anthropic/claude-sonnet-4") == Usage(27, 8, None)


def test_gemini_usage_adds_thinking_tokens_to_completion() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 4,
        "thinking_tokens": 3,
        "grounding_requests": 0,
        "usd_cents": 0.0002,
    }
    assert normalize_usage(usage, "gemini-2.5-flash") == Usage(14, 8, 0.0002)


def test_thinking_tokens_are_not_added_for_other_families() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "thinking_tokens": 3}
    assert normalize_usage(usage, "deepseek-reasoner") == Usage(10, 5, None)


def test_openrouter_keys_are_read_as_prompt_and_completion() -> None:
    usage = {"prompt": 10, "completion": 3, "input_cache_read": 4, "request": 1, "usd_cents": 0.2}
    assert normalize_usage(usage, "openrouter:openai/gpt-4o") == Usage(14, 3, 0.2)


def test_v1_array_usage_is_summed_by_type() -> None:
    usage = [
        {"type": "prompt", "model": "gpt-4o-mini", "amount": 12, "cost": 0},
        {"type": "completion", "model": "gpt-4o-mini", "amount": 5, "cost": 0},
        {"type": "prompt", "model": "gpt-4o-mini", "amount": 3, "cost": 0},
        {"type": "image", "model": "gpt-4o-mini", "amount": 100, "cost": 0},
        "not an entry",
    ]
    assert normalize_usage(usage, "gpt-4o-mini") == Usage(15, 5, None)


def test_usage_with_only_a_null_cost_is_no_usage() -> None:
    assert normalize_usage({"usd_cents": None}, "gpt-4o-mini") is None


def test_empty_usage_is_no_usage() -> None:
    assert normalize_usage({}, "claude-sonnet-4-5") is None


@pytest.mark.parametrize("raw", [None, "12 tokens", 12, True])
def test_usage_that_is_not_an_object_is_no_usage(raw: object) -> None:
    assert normalize_usage(raw, "gpt-4o-mini") is None


def test_usd_cents_is_kept_as_a_float() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "usd_cents": 3}
    result = normalize_usage(usage, "deepseek-chat")
    assert result == Usage(1, 2, 3.0)
    assert result is not None
    assert isinstance(result.usd_cents, float)


# --- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (401, "token_missing", "Missing authentication token"),
        (401, "token_auth_failed", "Authentication failed"),
        (401, "reauth_required", "Reauthentication required"),
        (400, "token_expired", "Token expired"),
        (401, None, "Authentication failed."),
        (403, "forbidden", "Account suspended"),
    ],
)
def test_token_errors_are_auth_failures(status: int, code: str | None, message: str) -> None:
    assert failure_fields(classify(status, code, message)) == (
        FailureKind.AUTH,
        message,
        status,
        None,
    )


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (402, "insufficient_funds", "No usage left for request."),
        (402, "insufficient_funds", "Available funding is insufficient for this request."),
        (400, "insufficient_funds", "Insufficient funds"),
        (402, None, "Payment required"),
        (
            400,
            "error_400_from_delegate",
            "Error 400 from delegate `usage-limited-chat`: Permission denied.",
        ),
    ],
)
def test_out_of_credits_errors_are_quota_failures(
    status: int, code: str | None, message: str
) -> None:
    assert failure_fields(classify(status, code, message)) == (
        FailureKind.QUOTA,
        message,
        status,
        None,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "too_many_requests"),
        (429, "rate_limit_exceeded"),
        (429, "upstream_rate_limited"),
        (400, "too_many_requests"),
        (400, "rate_limit_exceeded"),
        (400, "upstream_rate_limited"),
        (429, None),
    ],
)
def test_rate_limits_are_rate_limited_and_keep_retry_after(status: int, code: str | None) -> None:
    failure = classify(status, code, "Too many requests.", 7.5)
    assert failure_fields(failure) == (FailureKind.RATE_LIMITED, "Too many requests.", status, 7.5)


def test_a_rate_limit_without_retry_after_has_none() -> None:
    failure = classify(429, "too_many_requests", "Too many requests.")
    assert failure.retry_after is None


def test_subscriber_only_model_is_a_forbidden_model() -> None:
    message = "The model claude-opus-4-1 is only available to subscribers."
    assert failure_fields(classify(403, "permission_denied", message)) == (
        FailureKind.FORBIDDEN_MODEL,
        message,
        403,
        None,
    )


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("bad_request", "Model not found: no-such-model"),
        (
            None,
            "Model not found, please try one of the following models listed here: "
            "https://developer.puter.com/ai/models/",
        ),
        (
            "field_invalid",
            'Field "model" is invalid. Expected a valid model name from '
            "https://api.puter.com/puterai/chat/models. Got nope.",
        ),
    ],
)
def test_unknown_models_are_model_not_found(code: str | None, message: str) -> None:
    failure = classify(400, code, message)
    assert failure_fields(failure) == (FailureKind.MODEL_NOT_FOUND, message, 400, None)
    assert failure.kind.is_clients_fault is True


def test_field_invalid_on_another_field_is_a_bad_request() -> None:
    message = 'Field "messages" is invalid. Expected an array.'
    assert classify(400, "field_invalid", message).kind is FailureKind.BAD_REQUEST


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "upstream_provider_unavailable", "AI provider unavailable"),
        (400, "upstream_failed", "All AI providers failed"),
        (500, "internal_error", "Internal Server Error"),
        (500, "upstream_auth_failed", "Upstream authentication failed"),
        (502, "no_implementation_available", "No implementation available"),
        (502, None, "Bad gateway"),
        (503, None, "Service unavailable"),
        (504, None, "Gateway timeout"),
    ],
)
def test_provider_failures_and_5xx_are_server_failures(
    status: int, code: str | None, message: str
) -> None:
    failure = classify(status, code, message)
    assert failure_fields(failure) == (FailureKind.SERVER, message, status, None)
    assert failure.kind.is_clients_fault is False


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "upstream_bad_request", "prompt is too long: 200001 tokens > 200000 maximum"),
        (400, "bad_request", "each message must have a 'content' property"),
        (400, "bad_request", "message is not allowed"),
        (422, "moderation_failed", "Moderation failed"),
    ],
)
def test_refused_requests_are_bad_requests(status: int, code: str, message: str) -> None:
    failure = classify(status, code, message)
    assert failure_fields(failure) == (FailureKind.BAD_REQUEST, message, status, None)
    assert failure.kind.is_clients_fault is True


def test_classified_messages_are_cut_at_300_characters() -> None:
    assert classify(500, None, "x" * 1000).message == "x" * 300


# --- classify_stream_error ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind", "status"),
    [
        ("429 rate_limit_error: rate limited", FailureKind.RATE_LIMITED, 429),
        ("rate_limit_error: Number of request tokens has exceeded", FailureKind.RATE_LIMITED, 429),
        ("529 overloaded_error: Overloaded", FailureKind.SERVER, 502),
        ("Overloaded", FailureKind.SERVER, 502),
        ("500 api_error: Internal server error", FailureKind.SERVER, 502),
        (
            "400 invalid_request_error: prompt is too long: 200001 tokens > 200000",
            FailureKind.BAD_REQUEST,
            400,
        ),
    ],
)
def test_a_first_stream_error_line_is_judged_by_its_words(
    message: str, kind: FailureKind, status: int
) -> None:
    assert failure_fields(classify_stream_error(message)) == (kind, message, status, None)


@pytest.mark.parametrize(
    ("message", "kind", "status"),
    [
        (
            '500 {"type":"error","error":{"type":"api_error","message":"Internal server error"},'
            '"request_id":"req_011CV4001x"}',
            FailureKind.SERVER,
            502,
        ),
        (
            '529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
            '"request_id":"req_011CV429ab"}',
            FailureKind.SERVER,
            502,
        ),
        (
            '400 {"type":"error","error":{"type":"invalid_request_error","message":"prompt is '
            'too long"},"request_id":"req_5290"}',
            FailureKind.BAD_REQUEST,
            400,
        ),
    ],
)
def test_a_leading_status_decides_over_digits_in_a_request_id(
    message: str, kind: FailureKind, status: int
) -> None:
    failure = classify_stream_error(message)
    assert (failure.kind, failure.status) == (kind, status)


# --- error_details ----------------------------------------------------------------------


def test_v1_envelope_with_a_status_gives_that_status_code_and_message() -> None:
    body = {
        "success": False,
        "error": {
            "$": "heyputer:api/APIError",
            "code": "insufficient_funds",
            "message": "Available funding is insufficient for this request.",
            "status": 402,
        },
    }
    assert error_details(200, body) == (
        402,
        "insufficient_funds",
        "Available funding is insufficient for this request.",
    )


def test_v1_envelope_without_a_status_is_a_400() -> None:
    body = {"success": False, "error": {"code": "rate_limit_exceeded", "message": "Slow down"}}
    assert error_details(200, body) == (400, "rate_limit_exceeded", "Slow down")


def test_v1_delegate_error_is_read_with_its_code() -> None:
    body = {
        "success": False,
        "error": {
            "code": "error_400_from_delegate",
            "message": "Error 400 from delegate `usage-limited-chat`: Permission denied.",
            "delegate": "usage-limited-chat",
            "status": 400,
        },
    }
    details = error_details(200, body)
    assert details == (
        400,
        "error_400_from_delegate",
        "Error 400 from delegate `usage-limited-chat`: Permission denied.",
    )
    assert classify(*details).kind is FailureKind.QUOTA


def test_v1_envelope_with_a_string_error_is_a_400_with_that_message() -> None:
    body = {"success": False, "error": "Calling ai-chat directly is not yet supported"}
    assert error_details(200, body) == (400, None, "Calling ai-chat directly is not yet supported")


def test_v2_flat_body_keeps_the_http_status_and_code() -> None:
    body = {
        "error": "No usage left for request.",
        "message": "No usage left for request.",
        "code": "insufficient_funds",
    }
    assert error_details(402, body) == (402, "insufficient_funds", "No usage left for request.")


def test_v2_flat_body_with_attempts_keeps_its_message() -> None:
    body = {
        "error": "AI provider unavailable",
        "message": "AI provider unavailable",
        "code": "upstream_provider_unavailable",
        "attempts": [{"model": "gpt-4o-mini", "status": 502, "error": "bad gateway"}],
    }
    assert error_details(400, body) == (
        400,
        "upstream_provider_unavailable",
        "AI provider unavailable",
    )


def test_a_flat_error_body_on_a_200_is_still_an_error() -> None:
    assert error_details(200, {"error": "Oops"}) == (400, None, "Oops")


@pytest.mark.parametrize(
    "body",
    [
        {"success": True, "result": {"message": {"role": "assistant", "content": "Hi"}}},
        {"result": {"message": {"role": "assistant", "content": "Hi"}}},
        {"message": {"role": "assistant", "content": "Hi"}},
        {"models": ["gpt-4o-mini"]},
    ],
)
def test_success_bodies_are_not_errors(body: dict[str, Any]) -> None:
    assert error_details(200, body) is None


def test_a_dict_without_error_on_an_error_status_is_that_status() -> None:
    assert error_details(503, {"detail": "maintenance"}) == (503, None, "HTTP 503")


def test_non_dict_bodies_are_errors_only_on_error_statuses() -> None:
    assert error_details(200, ["gpt-4o-mini"]) is None
    assert error_details(200, "plain text") is None
    assert error_details(502, "<html>Bad gateway</html>") == (502, None, "<html>Bad gateway</html>")
    assert error_details(500, "x" * 1000) == (500, None, "x" * 300)


# --- driver styles ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (404, "not_found", "Driver not found: puter-chat-completion:claude", True),
        (400, None, "Calling ai-chat directly is not yet supported", True),
        (404, "not_found", "Method not found: puter-chat-completion:complete", False),
        (404, "not_found", "Interface not found: puter-chat", False),
        (400, "bad_request", "Model not found: gpt-4o-mini", False),
        (402, "insufficient_funds", "No usage left for request.", False),
    ],
)
def test_driver_style_errors_are_the_two_legacy_signals(
    status: int, code: str | None, message: str, expected: bool
) -> None:
    assert is_driver_style_error(status, code, message) is expected


@pytest.mark.parametrize(
    ("model", "driver"),
    [
        ("", "openai-completion"),
        ("gpt-4o-mini", "openai-completion"),
        ("GPT-4o", "openai-completion"),
        ("o1-mini", "openai-completion"),
        ("o3", "openai-completion"),
        ("o4-mini", "openai-completion"),
        ("openai/gpt-4o", "openai-completion"),
        ("claude-sonnet-4-5", "claude"),
        ("claude", "claude"),
        ("anthropic/claude-3-7-sonnet-latest", "claude"),
        ("mistral-large-latest", "mistral"),
        ("codestral-latest", "mistral"),
        ("pixtral-12b", "mistral"),
        ("magistral-medium", "mistral"),
        ("devstral-small", "mistral"),
        ("open-mistral-nemo", "mistral"),
        ("grok-beta", "xai"),
        ("grok-3", "xai"),
        ("deepseek-chat", "deepseek"),
        ("deepseek-reasoner", "deepseek"),
        ("gemini-2.5-flash", "gemini"),
        ("meta-llama/llama-3.3-70b-instruct", "openrouter"),
        ("openrouter:openai/gpt-4o", "openrouter"),
        ("openrouter:anthropic/claude-sonnet-4", "openrouter"),
        ("openrouter:mistralai/mistral-large", "openrouter"),
        ("ollama:llama3", "ollama"),
        ("ollama:mistral", "ollama"),
    ],
)
def test_legacy_driver_follows_the_v1_table(model: str, driver: str) -> None:
    assert legacy_driver(model) == driver


# --- chat_args --------------------------------------------------------------------------


def test_args_of_a_plain_request_carry_model_messages_and_stream_only() -> None:
    request = {"model": "gpt-4o-mini", "messages": [USER]}
    assert chat_args(request, stream=True) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "max_tokens": 50,
        "max_completion_tokens": 100,
    }
    assert chat_args(request, stream=False)["max_tokens"] == 100


def test_max_tokens_is_sent_when_alone() -> None:
    request = {"model": "gpt-4o-mini", "messages": [USER], "max_tokens": 50}
    assert chat_args(request, stream=False)["max_tokens"] == 50


def test_claude_without_temperature_gets_openais_default_of_1() -> None:
    request = {"model": "claude-sonnet-4-5", "messages": [USER]}
    assert chat_args(request, stream=False) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "temperature": 1.0,
    }


def test_claude_keeps_a_temperature_the_client_sent() -> None:
    request = {"model": "claude-sonnet-4-5", "messages": [USER], "temperature": 0.2}
    assert chat_args(request, stream=False)["temperature"] == 0.2


def test_claude_keeps_a_temperature_of_zero() -> None:
    request = {"model": "anthropic/claude-sonnet-4", "messages": [USER], "temperature": 0}
    assert chat_args(request, stream=False)["temperature"] == 0


def test_other_models_without_temperature_send_none() -> None:
    request = {"model": "gpt-4o-mini", "messages": [USER]}
    assert "temperature" not in chat_args(request, stream=False)


def test_parameters_most_providers_ignore_are_passed_through() -> None:
    request = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 42,
        "parallel_tool_calls": False,
        "response_format": {"type": "text"},
        "user": "someone",
        "logit_bias": {"50256": -100},
    }
    assert chat_args(request, stream=False) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 42,
        "parallel_tool_calls": False,
        "response_format": {"type": "text"},
    }


def test_a_json_response_format_is_passed_through_too() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    request = {"model": "gpt-4o-mini", "messages": [USER], "response_format": response_format}
    assert chat_args(request, stream=False)["response_format"] == response_format


def test_tools_and_tool_choice_are_passed_through() -> None:
    request = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": "auto",
    }
    args = chat_args(request, stream=False)
    assert args["tools"] == [WEATHER_TOOL, TIME_TOOL]
    assert args["tool_choice"] == "auto"


def test_tool_choice_none_sends_no_tools() -> None:
    request = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": "none",
    }
    assert chat_args(request, stream=False) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
    }


def test_a_named_function_choice_sends_only_that_tool() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    request = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": choice,
    }
    args = chat_args(request, stream=False)
    assert args["tools"] == [TIME_TOOL]
    assert args["tool_choice"] == choice


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("o1", True),
        ("o3-mini", True),
        ("o4-mini", True),
        ("gpt-5-nano", True),
        ("openrouter:openai/o4-mini", True),
        ("gpt-4o", False),
        ("gpt-4o-mini", False),
        ("claude-sonnet-4-5", False),
        ("deepseek-reasoner", False),
    ],
)
def test_reasoning_effort_is_sent_only_to_reasoning_families(model: str, sent: bool) -> None:
    request = {"model": model, "messages": [USER], "reasoning_effort": "low"}
    args = chat_args(request, stream=False)
    assert ("reasoning_effort" in args) is sent
    if sent:
        assert args["reasoning_effort"] == "low"


def test_provider_is_never_sent() -> None:
    request = {"model": "gpt-4o-mini", "messages": [USER], "provider": "openai-completion"}
    assert "provider" not in chat_args(request, stream=False)


# --- convert_messages -------------------------------------------------------------------


def test_developer_messages_become_system_messages() -> None:
    messages = [{"role": "developer", "content": "Be terse."}, USER]
    assert convert_messages(messages, "gpt-4o-mini") == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
    ]


def test_a_message_without_content_or_tool_calls_gets_empty_content() -> None:
    assert convert_messages([{"role": "assistant", "content": None}], "gpt-4o-mini") == [
        {"role": "assistant", "content": ""}
    ]


def test_tool_round_trip_messages_keep_their_fields() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "name": "bob", "content": "Thanks"},
    ]
    assert convert_messages(messages, "gpt-4o-mini") == [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "user", "content": "Thanks", "name": "bob"},
    ]


def test_a_message_without_role_is_a_user_message() -> None:
    assert convert_messages([{"content": "Hi"}], "gpt-4o-mini") == [
        {"role": "user", "content": "Hi"}
    ]


def test_image_url_parts_pass_through_for_gpt_models() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    assert convert_messages([{"role": "user", "content": parts}], "gpt-4o-mini") == [
        {"role": "user", "content": parts}
    ]


def test_claude_gets_a_data_url_as_a_base64_image_block() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
    ]
    assert convert_messages([{"role": "user", "content": parts}], "claude-sonnet-4-5") == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
            ],
        }
    ]


def test_claude_gets_an_https_url_as_a_url_source_block() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    assert convert_messages([{"role": "user", "content": parts}], "anthropic/claude-sonnet-4") == [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
            ],
        }
    ]


# --- chat_result ------------------------------------------------------------------------


def envelope(result: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "success": True,
        "result": result,
        "service": {"name": "ai-chat"},
        "metadata": metadata,
    }


def openai_result(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "refusal": None, **message},
        "logprobs": None,
        "finish_reason": finish,
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "cached_tokens": 4,
            "usd_cents": 0.3,
        },
        "via_ai_chat_service": True,
    }


def claude_result(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "message": {
            "id": "msg_01abc",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        },
        "usage": {
            "input_tokens": 20,
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 0,
            "cache_read_input_tokens": 2,
            "output_tokens": 8,
            "usd_cents": 0.01,
        },
        "finish_reason": "stop",
        "via_ai_chat_service": True,
    }


def test_openai_shaped_result_is_read_with_its_usage_and_served_model() -> None:
    body = envelope(
        openai_result({"content": "Hello!"}),
        service_used="openai-completion",
        providerUsed="gpt-4o-mini",
    )
    assert chat_result(body, "gpt-4o-mini") == ChatResult(
        content="Hello!",
        reasoning="",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(16, 5, 0.3),
        served_model="gpt-4o-mini",
    )


def test_openai_shaped_tool_calls_finish_with_tool_calls() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
    }
    body = envelope(openai_result({"content": None, "tool_calls": [call]}, finish="stop"))
    assert chat_result(body, "gpt-4o-mini") == ChatResult(
        content="",
        tool_calls=[ToolCallEvent("call_1", "get_weather", '{"location":"Paris"}')],
        finish_reason="tool_calls",
        usage=Usage(16, 5, 0.3),
    )


def test_openai_shaped_length_finish_is_kept() -> None:
    body = envelope(openai_result({"content": "Hel"}, finish="length"))
    assert chat_result(body, "gpt-4o-mini").finish_reason == "length"


def test_an_unknown_finish_reason_becomes_stop() -> None:
    body = envelope(openai_result({"content": "Hi"}, finish="end_turn"))
    assert chat_result(body, "gpt-4o-mini").finish_reason == "stop"


def test_claude_shaped_result_with_tool_use_blocks_finishes_with_tool_calls() -> None:
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ]
    body = envelope(
        claude_result(content, stop_reason="tool_use"),
        service_used="claude",
        providerUsed="claude-sonnet-4-5",
    )
    assert chat_result(body, "claude-sonnet-4-5") == ChatResult(
        content="Let me look.",
        reasoning="",
        tool_calls=[
            ToolCallEvent("toolu_1", "get_weather", '{"city":"Paris"}'),
            ToolCallEvent("toolu_2", "get_time", "{}"),
        ],
        finish_reason="tool_calls",
        usage=Usage(22, 8, 0.01),
        served_model="claude-sonnet-4-5",
    )


def test_claude_max_tokens_stop_reason_finishes_with_length() -> None:
    body = envelope(claude_result([{"type": "text", "text": "Once upon"}], "max_tokens"))
    assert chat_result(body, "claude-sonnet-4-5") == ChatResult(
        content="Once upon",
        finish_reason="length",
        usage=Usage(22, 8, 0.01),
        served_model="claude-sonnet-4-5-20250929",
    )


def test_claude_thinking_blocks_become_reasoning() -> None:
    content = [
        {"type": "thinking", "thinking": "Hmm. ", "signature": "sig"},
        {"type": "text", "text": "Four."},
    ]
    result = chat_result(envelope(claude_result(content)), "claude-sonnet-4-5")
    assert (result.content, result.reasoning, result.finish_reason) == ("Four.", "Hmm. ", "stop")


def test_openai_shaped_reasoning_is_read() -> None:
    body = envelope(openai_result({"content": "Four.", "reasoning": "2 + 2 = 4. "}))
    result = chat_result(body, "deepseek-reasoner")
    assert (result.content, result.reasoning) == ("Four.", "2 + 2 = 4. ")
    assert result.usage == Usage(12, 5, 0.3)


def test_a_message_at_the_top_level_is_read() -> None:
    body = {"message": {"role": "assistant", "content": "Hi"}}
    assert chat_result(body, "gpt-4o-mini") == ChatResult(content="Hi")


def test_a_body_without_a_message_is_a_server_failure() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        chat_result({"success": True, "result": {"usage": {}}}, "gpt-4o-mini")
    assert failure_fields(caught.value) == (
        FailureKind.SERVER,
        "the upstream sent no message",
        502,
        None,
    )


def test_a_result_that_is_not_an_object_is_a_server_failure() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        chat_result({"success": True, "result": "hello"}, "gpt-4o-mini")
    assert failure_fields(caught.value) == (
        FailureKind.SERVER,
        "the upstream sent no chat result",
        502,
        None,
    )


LOREM = [{"type": "text", "text": "Lorem ipsum dolor sit amet."}]


def substituted(**changes: Any) -> dict[str, Any]:
    result = claude_result(LOREM)
    result["message"].update(changes.pop("message", {}))
    return envelope(result, **changes)


@pytest.mark.parametrize(
    "body",
    [
        substituted(service_used="fake-chat"),
        substituted(message={"model": "fake"}),
        substituted(message={"model": "abuse"}),
        substituted(message={"id": ZERO_UUID}),
    ],
    ids=["service-fake-chat", "model-fake", "model-abuse", "zero-uuid"],
)
def test_a_silent_substitution_is_a_server_failure(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        chat_result(body, "claude-sonnet-4-5")
    assert failure_fields(caught.value) == (
        FailureKind.SERVER,
        "the upstream replaced the answer",
        502,
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        substituted(usage_limited=True),
        substituted(message={"model": "usage-limited"}),
        substituted(usage_limited=True, service_used="fake-chat"),
    ],
    ids=["metadata-usage-limited", "model-usage-limited", "usage-limited-fake-chat"],
)
def test_a_usage_limited_answer_is_a_quota_failure(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        chat_result(body, "claude-sonnet-4-5")
    assert failure_fields(caught.value) == (
        FailureKind.QUOTA,
        "the upstream account is out of credits",
        None,
        None,
    )
