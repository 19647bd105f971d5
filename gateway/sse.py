"""Streaming responses that always close their source: SSE for chat, raw bytes for media."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from django.http import StreamingHttpResponse


class ClosingStreamResponse(StreamingHttpResponse):
    """A streaming response whose `__aiter__` closes the source in `finally`.

    Django 5.2 closes only its own outer iterator: on a stalled peer the source's cleanup
    would otherwise run after the request has ended, outside its context.
    """

    def __init__(
        self,
        source: AsyncGenerator[bytes, None],
        *,
        content_type: str,
        first: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(source, content_type=content_type, headers=headers)
        # Proxies such as nginx would otherwise hold the bytes back.
        self["X-Accel-Buffering"] = "no"
        self._source = source
        self._first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self._first:
                yield self._first
            async for chunk in self._source:
                yield chunk
        finally:
            await self._source.aclose()


class SSEResponse(ClosingStreamResponse):
    """`text/event-stream`, never cached."""

    def __init__(
        self,
        source: AsyncGenerator[bytes, None],
        *,
        first: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(source, content_type="text/event-stream", first=first, headers=headers)
        self["Cache-Control"] = "no-cache"
