"""SSEResponse: a streaming response that always closes its source generator."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from django.http import StreamingHttpResponse


class SSEResponse(StreamingHttpResponse):
    """`text/event-stream` whose `__aiter__` closes the source in `finally`.

    Django 5.2 closes only its own outer iterator: on a stalled peer the source's cleanup
    would otherwise run after the request has ended, outside its context.
    """

    def __init__(
        self,
        source: AsyncGenerator[bytes, None],
        *,
        first: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(source, content_type="text/event-stream", headers=headers)
        self["Cache-Control"] = "no-cache"
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
