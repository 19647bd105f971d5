"""An upstream's streamed body as lines, one network read at a time.

The stream parsers take every line one read completed at once, so that what the upstream
sent together can go to the client together, and nothing ever waits for more.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import httpx

from gateway.providers.base import FailureKind, UpstreamFailure

MAX_LINE_BYTES = 8 * 1024 * 1024


class UpstreamLines:
    def __init__(self, response: httpx.Response) -> None:
        # Declared an iterator, made by an async generator: closed with the stream.
        self._chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        self._rest = b""
        self.ended = False

    async def read(self) -> list[bytes]:
        """The lines the next read completed (at the end, the unterminated last one)."""
        if self.ended:
            return []
        try:
            chunk = await anext(self._chunks, None)
        except httpx.TimeoutException:
            raise UpstreamFailure(
                FailureKind.TIMEOUT, "the upstream went silent", status=504
            ) from None
        except httpx.HTTPError:
            raise UpstreamFailure(FailureKind.SERVER, "the upstream stream was cut off") from None
        if chunk is None:
            self.ended = True
            rest, self._rest = self._rest, b""
            return [rest] if rest else []
        self._rest += chunk
        lines: list[bytes] = []
        if b"\n" in chunk:
            *lines, self._rest = self._rest.split(b"\n")
        if len(self._rest) > MAX_LINE_BYTES:
            raise UpstreamFailure(FailureKind.SERVER, "the upstream sent an over-long line")
        return lines

    async def aclose(self) -> None:
        await self._chunks.aclose()
