"""Puter's wire format (PUTER.md part B): messages out; errors, usage and results in."""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.providers.base import (
    ChatResult,
    FailureKind,
    ToolCallEvent,
    UpstreamFailure,
    Usage,
)

CHAT_INTERFACE = "puter-chat-completion"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SUBSTITUTE_MODELS = frozenset({"fake", "abuse", "usage-limited"})
AUTH_CODES = frozenset({"token_missing", "token_auth_failed", "reauth_required", "token_expired"})
RATE_CODES = frozenset({"too_many_requests", "rate_limit_exceeded", "upstream_rate_limited"})
SERVER_CODES = frozenset(
    {
        "upstream_provider_unavailable",
        "upstream_failed",
        "internal_error",
        "upstream_auth_failed",
        "no_implementation_available",
    }
)
# Families whose providers subtract cached tokens from prompt_tokens (PUTER.md B 14).
_CACHED_SUBTRACTED = ("gpt-", "o1", "o3", "o4", "chatgpt-", "gemini-", "llama-", "grok-")
_REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")
_LEADING_STATUS = re.compile(r"\s*([1-5]\d\d)\b")


def model_base(model: str) -> str:
    """`openrouter:openai/GPT-4o` → `gpt-4o`: the family is in the last path segment."""
    return model.strip().lower().rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def is_claude(model: str) -> bool:
    return model_base(model).startswith("claude")


# --- requests ------------------------------------------------------------------------


def legacy_driver(model: str) -> str:
    """The v1 driver name for a chat model (PUTER.md B 2.3)."""
    lowered = model.strip().lower()
    base = model_base(model)
    # An explicit `openrouter:` or `ollama:` route wins over the family in the model name.
    prefixes = (
        (("openrouter:",), "openrouter"),
        (("ollama:",), "ollama"),
        (("claude", "anthropic/"), "claude"),
        (("mistral", "codestral", "pixtral", "magistral", "devstral", "open-mistral"), "mistral"),
        (("grok",), "xai"),
        (("deepseek-chat", "deepseek-reasoner"), "deepseek"),
        (("gemini",), "gemini"),
    )
    for starts, driver in prefixes:
        if lowered.startswith(starts) or base.startswith(starts):
            return driver
    if "/" in lowered and not lowered.startswith("openai/"):
        return "openrouter"
    return "openai-completion"


def convert_messages(messages: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    claude = is_claude(model)
    return [_convert_message(message, claude) for message in messages]


def _convert_message(message: dict[str, Any], claude: bool) -> dict[str, Any]:
    role = message.get("role", "user")
    converted: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = message.get("content")
    if isinstance(content, list):
        converted["content"] = [_convert_part(part, claude) for part in content]
    elif content is not None:
        converted["content"] = content
    elif not message.get("tool_calls"):
        # Puter refuses a message without content unless it carries tool calls.
        converted["content"] = ""
    for name in ("name", "tool_calls", "tool_call_id"):
        if message.get(name) is not None:
            converted[name] = message[name]
    return converted


def _convert_part(part: dict[str, Any], claude: bool) -> dict[str, Any]:
    if part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    if not claude:
        # Pass the part through whole: `detail` and any other field reach the provider.
        return part if isinstance(image, dict) else {"type": "image_url", "image_url": {"url": url}}
    # Puter's Claude adapter passes blocks through unconverted: send Anthropic's own form.
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def drivers_call(driver: str, args: dict[str, Any], token: str) -> dict[str, Any]:
    """The body of a `POST /drivers/call` for a chat completion (PUTER.md B 2)."""
    return {
        "interface": CHAT_INTERFACE,
        "driver": driver,
        "method": "complete",
        "args": args,
        "auth_token": token,
        "test_mode": False,
    }


def chat_args(request: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The `args` of a `puter-chat-completion` call for an OpenAI chat request."""
    model: str = request["model"]
    messages = convert_messages(request["messages"], model)
    instruction = json_instruction(request.get("response_format"))
    if instruction:
        messages = with_system_instruction(messages, instruction)
    args: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens:
        args["max_tokens"] = max_tokens
    temperature = request.get("temperature")
    if temperature is None and is_claude(model):
        temperature = 1.0  # OpenAI's default; Claude's own is 0
    if temperature is not None:
        args["temperature"] = temperature
    for name in ("top_p", "stop", "seed", "parallel_tool_calls", "response_format"):
        if request.get(name) is not None:
            args[name] = request[name]
    _add_tools(args, request)
    effort = request.get("reasoning_effort")
    if effort and model_base(model).startswith(_REASONING_FAMILIES):
        args["reasoning_effort"] = effort
    return args


def json_instruction(response_format: Any) -> str:
    """The system instruction that emulates JSON mode for providers without it."""
    if not isinstance(response_format, dict):
        return ""
    kind = response_format.get("type")
    if kind not in {"json_object", "json_schema"}:
        return ""
    text = "Reply with one JSON value only: no prose, no Markdown, no code fences."
    schema = (response_format.get("json_schema") or {}).get("schema")
    if kind == "json_schema" and schema is not None:
        text += " The JSON must conform to this JSON Schema: " + _json(schema)
    return text


def with_system_instruction(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Merge `text` into the leading system message: Claude reads only the first one."""
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        content = first.get("content")
        if isinstance(content, list):
            first["content"] = [*content, {"type": "text", "text": text}]
        else:
            first["content"] = f"{content}\n\n{text}" if content else text
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _add_tools(args: dict[str, Any], request: dict[str, Any]) -> None:
    tools: list[dict[str, Any]] | None = request.get("tools")
    choice = request.get("tool_choice")
    if not tools or choice == "none":
        return
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        tools = [tool for tool in tools if (tool.get("function") or {}).get("name") == wanted]
    args["tools"] = tools
    if choice is not None:
        args["tool_choice"] = choice


# --- errors ----------------------------------------------------------------------------


def error_details(status: int, body: Any) -> tuple[int, str | None, str] | None:
    """(status, code, message) if `body` is an error in either generation's shape."""
    if not isinstance(body, dict):
        return None if 200 <= status < 300 else (status, None, str(body)[:300])
    if body.get("success") is False:  # v1: HTTP 200 with the real status inside
        error = body.get("error")
        if isinstance(error, dict):
            inner = error.get("status")
            code = error.get("code") or error.get("delegate")
            message = str(error.get("message") or code or "upstream error")
            return (inner if isinstance(inner, int) else 400), code, message
        return 400, None, str(error or "upstream error")
    if "error" in body and "success" not in body:  # v2: flat body, real status
        message = str(body.get("message") or body.get("error") or "upstream error")
        code = body.get("code")
        return (status if status >= 400 else 400), code if isinstance(code, str) else None, message
    if status >= 400:
        return status, None, f"HTTP {status}"
    return None


def is_driver_style_error(status: int, code: str | None, message: str) -> bool:
    return (status == 404 and code == "not_found" and message.startswith("Driver not found")) or (
        "Calling ai-chat directly" in message
    )


def classify(
    status: int, code: str | None, message: str, retry_after: float | None = None
) -> UpstreamFailure:
    """Map one Puter error to what the gateway does with it (PUTER.md part A table)."""
    lowered = message.lower()
    kind: FailureKind
    if status == 401 or code in AUTH_CODES:
        kind = FailureKind.AUTH
    elif status == 402 or code == "insufficient_funds" or "usage-limited" in lowered:
        kind = FailureKind.QUOTA
    elif status == 429 or code in RATE_CODES:
        kind = FailureKind.RATE_LIMITED
    elif status == 403 and code == "permission_denied":
        kind = FailureKind.FORBIDDEN_MODEL
    elif status == 403:
        kind = FailureKind.AUTH
    elif "model not found" in lowered or (code == "field_invalid" and "model" in lowered):
        kind = FailureKind.MODEL_NOT_FOUND
    elif status >= 500 or code in SERVER_CODES:
        kind = FailureKind.SERVER
    else:
        kind = FailureKind.BAD_REQUEST
    return UpstreamFailure(kind, message[:300], status=status, retry_after=retry_after)


def classify_stream_error(message: str) -> UpstreamFailure:
    """An `error` line that came first (Claude, PUTER.md B 14): judge it by its words."""
    lowered = message.lower()
    # Anthropic's messages start with the HTTP status; digits later (a request id) prove nothing.
    leading = _LEADING_STATUS.match(lowered)
    status = leading[1] if leading else lowered
    if "429" in status or "rate_limit" in lowered or "rate limit" in lowered:
        return UpstreamFailure(FailureKind.RATE_LIMITED, message[:300], status=429)
    if "400" in status and "529" not in status:
        return UpstreamFailure(FailureKind.BAD_REQUEST, message[:300], status=400)
    return UpstreamFailure(FailureKind.SERVER, message[:300], status=502)


# --- usage -----------------------------------------------------------------------------


def _number(raw: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None


def normalize_usage(raw: Any, model: str) -> Usage | None:
    """Puter's provider-specific usage as prompt and completion tokens (PUTER.md A, B 10)."""
    if isinstance(raw, list):  # v1: [{"type": "prompt", "amount": N}, ...]
        totals = {"prompt": 0, "completion": 0}
        for item in raw:
            if isinstance(item, dict) and item.get("type") in totals:
                totals[item["type"]] += _number(item, "amount") or 0
        return Usage(totals["prompt"], totals["completion"])
    if not isinstance(raw, dict):
        return None
    base = model_base(model)
    prompt = _number(raw, "prompt_tokens", "input_tokens", "prompt")
    completion = _number(raw, "completion_tokens", "output_tokens", "completion")
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    completion = completion or 0
    if base.startswith("claude"):
        prompt += sum(
            _number(raw, name) or 0
            for name in (
                "ephemeral_5m_input_tokens",
                "ephemeral_1h_input_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            )
        )
    elif base.startswith(_CACHED_SUBTRACTED):
        prompt += _number(raw, "cached_tokens", "input_cache_read") or 0
    if base.startswith("gemini"):
        completion += _number(raw, "thinking_tokens") or 0
    cents = raw.get("usd_cents")
    return Usage(prompt, completion, float(cents) if isinstance(cents, int | float) else None)


# --- non-streamed results --------------------------------------------------------------


def envelope_result(body: Any) -> Any:
    if isinstance(body, dict) and "result" in body:
        return body["result"]
    return body


def chat_result(body: Any, model: str) -> ChatResult:
    """Extract an answer from a non-streamed reply, whichever provider shaped it (B 2.4)."""
    result = envelope_result(body)
    if not isinstance(result, dict):
        raise UpstreamFailure(FailureKind.SERVER, "the upstream sent no chat result", status=502)
    metadata = body.get("metadata") if isinstance(body, dict) else None
    message = result.get("message") or (body.get("message") if isinstance(body, dict) else None)
    if not isinstance(message, dict):
        raise UpstreamFailure(FailureKind.SERVER, "the upstream sent no message", status=502)
    _refuse_substitution(message, metadata if isinstance(metadata, dict) else {})
    text, reasoning, tool_calls = _message_parts(message)
    finish = result.get("finish_reason") or "stop"
    if tool_calls:
        finish = "tool_calls"
    elif message.get("stop_reason") == "max_tokens":
        finish = "length"
    elif finish not in {"stop", "length", "content_filter"}:
        finish = "stop"
    served = ""
    if isinstance(metadata, dict):
        served = str(metadata.get("providerUsed") or "")
    usage = normalize_usage(result.get("usage"), model)
    return ChatResult(
        content=text,
        reasoning=reasoning,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=usage,
        served_model=served or str(message.get("model") or ""),
    )


def _refuse_substitution(message: dict[str, Any], metadata: dict[str, Any]) -> None:
    limited = bool(metadata.get("usage_limited")) or message.get("model") == "usage-limited"
    replaced = (
        metadata.get("service_used") == "fake-chat"
        or message.get("model") in SUBSTITUTE_MODELS
        or message.get("id") == ZERO_UUID
    )
    if limited:
        raise UpstreamFailure(FailureKind.QUOTA, "the upstream account is out of credits")
    if replaced:
        raise UpstreamFailure(FailureKind.SERVER, "the upstream replaced the answer", status=502)


def _message_parts(message: dict[str, Any]) -> tuple[str, str, list[ToolCallEvent]]:
    content = message.get("content")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCallEvent] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "tool_use":
                calls.append(tool_call_of(part))
            elif kind == "thinking":
                thoughts.append(str(part.get("thinking") or ""))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("content"), str):
                texts.append(part["content"])
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            ToolCallEvent(
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=arguments if isinstance(arguments, str) else _json(arguments or {}),
            )
        )
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str):
        thoughts.append(reasoning)
    return "".join(texts), "".join(thoughts), calls


def tool_call_of(item: dict[str, Any]) -> ToolCallEvent:
    arguments = item.get("input")
    return ToolCallEvent(
        id=str(item.get("id") or ""),
        name=str(item.get("name") or ""),
        arguments=arguments if isinstance(arguments, str) else _json(arguments or {}),
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
