"""The legacy `text_completion` shapes, for `/v1/completions` mapped onto chat."""

from __future__ import annotations

import time
from typing import Any

from gateway.ids import url_id
from gateway.openai_format import ChunkWriter, sse, usage_body
from gateway.providers.base import ChatResult, ToolCallEvent, Usage


def text_completion_id() -> str:
    return "cmpl-" + url_id(18)


def text_completion(result: ChatResult, *, model: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": text_completion_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "text": result.content,
                "index": 0,
                "logprobs": None,
                "finish_reason": "length" if result.finish_reason == "length" else "stop",
            }
        ],
        "usage": usage_body(usage),
        "system_fingerprint": None,
    }


class TextChunkWriter(ChunkWriter):
    """Chunks of a streamed legacy completion: text only, no roles, tools or reasoning."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.id = text_completion_id()

    def _text_chunk(self, text: str, finish: str | None = None) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
        )

    def role(self) -> bytes:
        return b""

    def content(self, text: str) -> bytes:
        return self._text_chunk(text)

    def reasoning(self, text: str) -> bytes:
        return b""

    def tool_call(self, index: int, call: ToolCallEvent) -> bytes:
        return b""

    def finish(self, reason: str) -> bytes:
        return self._text_chunk("", "length" if reason == "length" else "stop")

    def usage(self, usage: Usage) -> bytes:
        return sse(
            {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_body(usage),
            }
        )
