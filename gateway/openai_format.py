"""OpenAI's reply shapes: `chat.completion`, its chunks and SSE framing."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.ids import url_id
from gateway.providers.base import ChatResult, ToolCallEvent, Usage

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return "chatcmpl-" + url_id(18)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def tool_call_body(call: ToolCallEvent) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_completion(result: ChatResult, *, model: str, usage: Usage) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.content if result.content or not result.tool_calls else None,
        "refusal": None,
    }
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = [tool_call_body(call) for call in result.tool_calls]
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_body(usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Chunks of one streamed completion: same id, created and model on each."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        # A text chunk is most of a stream: its constant parts are encoded once.
        empty = self._chunk({"content": ""})
        self._text_head, _, self._text_tail = empty.partition(b'"content":""')
        self._text_head += b'"content":'

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def content(self, text: str) -> bytes:
        return self._text_head + orjson.dumps(text) + self._text_tail

    def reasoning(self, text: str) -> bytes:
        return self._chunk({"reasoning_content": text})

    def tool_call(self, index: int, call: ToolCallEvent) -> bytes:
        return self._chunk({"tool_calls": [{"index": index, **tool_call_body(call)}]})

    def finish(self, reason: str) -> bytes:
        return self._chunk({}, reason)

    def usage(self, usage: Usage) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage_body(usage),
            }
        )


def error_event(message: str, code: str) -> bytes:
    return sse({"error": {"message": message, "type": "api_error", "param": None, "code": code}})
