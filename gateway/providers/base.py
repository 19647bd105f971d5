"""The provider interface: an OpenAI request in, normalised events or a result out.

A provider knows one upstream's wire protocol and nothing else: the relay, metering, usage
rows and failover are the same for every provider.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """One upstream as the relay sees it (the token decrypted, in memory only)."""

    id: int
    label: str
    provider: str
    base_url: str
    token: str
    account: str
    weight: int
    max_concurrency: int
    priority: int
    models: tuple[str, ...]

    def serves(self, model: str) -> bool:
        return not self.models or model.lower() in self.models


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    usd_cents: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class UsageEvent:
    usage: Usage


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The upstream failed after the stream began."""

    message: str
    code: str = "upstream_error"


@dataclass(frozen=True, slots=True)
class Finish:
    """The upstream said why it stopped (only complete results do)."""

    reason: str


Event = TextDelta | ReasoningDelta | ToolCallEvent | UsageEvent | StreamFailed | Finish


class FailureKind(enum.Enum):
    AUTH = "auth"  # the upstream's credentials are bad: disable it
    QUOTA = "quota"  # out of credits: cool for long
    RATE_LIMITED = "rate_limited"  # cool briefly
    SERVER = "server"  # 5xx, connection errors, replaced answers: count toward cooling
    TIMEOUT = "timeout"  # silent past the read timeout
    MODEL_NOT_FOUND = "model_not_found"  # the client's fault: never retried
    BAD_REQUEST = "bad_request"  # the client's fault: never retried
    FORBIDDEN_MODEL = "forbidden_model"  # this account may not use it: try another

    @property
    def is_clients_fault(self) -> bool:
        return self in {FailureKind.MODEL_NOT_FOUND, FailureKind.BAD_REQUEST}


class UpstreamFailure(Exception):
    """A failure before the first byte reached the client: the next upstream may be tried."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def hide(self, secret: str) -> None:
        """Cut `secret` out of the message: it reaches clients, logs, rows and the admin."""
        hidden = without_secret(self.message, secret)
        if hidden != self.message:
            self.message = hidden
            self.args = (hidden,)


HIDDEN = "[upstream token]"
_PARTIAL = 6  # a message cut short may end in this much of a secret, or more


def without_secret(text: str, secret: str) -> str:
    """`text` with `secret` replaced, also where a length cap cut it off at the end."""
    if not secret:
        return text
    text = text.replace(secret, HIDDEN)
    for size in range(min(len(secret) - 1, len(text)), _PARTIAL - 1, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + HIDDEN
    return text


@contextmanager
def token_hidden(target: UpstreamTarget) -> Iterator[None]:
    """Failures raised inside carry no trace of the target's token.

    Some upstreams quote the credential they were sent in their error messages.
    """
    try:
        yield
    except UpstreamFailure as failure:
        failure.hide(target.token)
        raise


@dataclass(slots=True)
class ChatResult:
    """A complete, non-streamed answer."""

    content: str
    reasoning: str = ""
    tool_calls: list[ToolCallEvent] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage | None = None
    served_model: str = ""


class ChatStream(Protocol):
    """An open upstream stream whose first event has already been read."""

    @property
    def buffered(self) -> bool:
        """Whether the next event is here without waiting for the upstream."""
        ...

    def events(self) -> AsyncIterator[Event]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    async def complete(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatResult: ...

    async def open_stream(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatStream: ...

    async def list_models(
        self, client: httpx.AsyncClient, target: UpstreamTarget
    ) -> list[dict[str, Any]]: ...


# --- media -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Media:
    """A generated image or video, whole."""

    content: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class VideoRequest:
    prompt: str
    model: str
    seconds: int
    size: str
    input_reference: str | None = None  # a data: URI or an http(s) URL


class UnusableResult(Exception):
    """The upstream answered, and was paid, with nothing usable: never try another one."""


class MediaStream(Protocol):
    """An open binary reply whose status and type were checked and first bytes read."""

    content_type: str

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class MediaProvider(Protocol):
    async def generate_image(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        *,
        prompt: str,
        model: str,
        size: str | None,
        quality: str | None,
    ) -> Media: ...

    async def synthesize_speech(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        *,
        text: str,
        model: str,
        voice: str,
        response_format: str,
    ) -> MediaStream: ...

    async def generate_video(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: VideoRequest
    ) -> Media: ...

    async def video_models(
        self, client: httpx.AsyncClient, target: UpstreamTarget
    ) -> list[str]: ...
