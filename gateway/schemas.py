"""OpenAI request schemas: what `/v1` accepts, and its OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A chat of more messages is refused with a 400 naming `messages`.
MAX_MESSAGES = 2048
# Integers go on to the upstream as 64-bit JSON numbers; pydantic would turn 1e30 into an int.
INT64_MAX = 2**63 - 1


class Lenient(BaseModel):
    """Plain pydantic models, not ninja's Schema: bodies are JSON, never ORM objects, and
    Schema's wrapper reads each field of each message through Python getattr (8x slower)."""

    # Clients such as LangChain send more than they need: accept and ignore the rest.
    model_config = ConfigDict(extra="allow")


class ImageUrl(Lenient):
    url: str = Field(min_length=1)
    detail: str | None = None


class ContentPart(Lenient):
    type: str = Field(min_length=1)
    text: str | None = None
    image_url: ImageUrl | None = None


class FunctionCall(Lenient):
    name: str
    arguments: str


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(Lenient):
    include_usage: bool = False


class ChatCompletionRequest(Lenient):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=INT64_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT64_MAX)
    n: int | None = Field(default=None, ge=1, le=INT64_MAX)
    logprobs: bool | None = None
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    user: str | None = None


class CompletionRequest(Lenient):
    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=INT64_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=INT64_MAX)
    logprobs: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    echo: bool = False
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    user: str | None = None
