"""Complete results as streams, and streams as complete results: the two bridges."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.providers.base import (
    ChatResult,
    ChatStream,
    Event,
    FailureKind,
    Finish,
    ReasoningDelta,
    StreamFailed,
    TextDelta,
    UpstreamFailure,
    UsageEvent,
)


class ResultStream:
    """A complete result played back as stream events."""

    def __init__(self, result: ChatResult) -> None:
        self._result = result

    @property
    def buffered(self) -> bool:
        return True  # every event is in memory

    async def events(self) -> AsyncIterator[Event]:
        result = self._result
        if result.reasoning:
            yield ReasoningDelta(result.reasoning)
        if result.content:
            yield TextDelta(result.content)
        for call in result.tool_calls:
            yield call
        if result.usage is not None:
            yield UsageEvent(result.usage)
        yield Finish(result.finish_reason)

    async def aclose(self) -> None:
        return None


async def collect(stream: ChatStream) -> ChatResult:
    """Drain a stream into one result (for a non-streaming client)."""
    result = ChatResult(content="")
    texts: list[str] = []
    try:
        async for event in stream.events():
            if isinstance(event, TextDelta):
                texts.append(event.text)
            elif isinstance(event, ReasoningDelta):
                result.reasoning += event.text
            elif isinstance(event, UsageEvent):
                result.usage = event.usage
            elif isinstance(event, Finish):
                result.finish_reason = event.reason
            elif isinstance(event, StreamFailed):
                raise UpstreamFailure(FailureKind.SERVER, event.message, status=502)
            else:
                result.tool_calls.append(event)
    finally:
        await stream.aclose()
    result.content = "".join(texts)
    if result.tool_calls:
        result.finish_reason = "tool_calls"
    return result
