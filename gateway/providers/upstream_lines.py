"""An upstream's streamed body as lines, and as events, one network read at a time.

The stream parsers take every line one read completed at once, so that what the upstream
sent together can go to the client together, and nothing ever waits for more.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import httpx

from gateway.providers.base import Event, FailureKind, StreamFailed, UpstreamFailure

MAX_LINE_BYTES = 8 * 1024 * 1024
# What may follow an upstream's last event (the body's end) and still be read, so that its
# connection goes back to the pool instead of being closed.
TAIL_BYTES = 64 * 1024
TAIL_SECONDS = 0.05


class UpstreamLines:
    def __init__(self, response: httpx.Response) -> None:
        # Declared an iterator, made by an async generator: closed with the stream. The raw
        # body skips httpx's decoding layer, unless the upstream compressed it after all.
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        body = response.aiter_bytes() if encoded else response.aiter_raw()
        self._chunks = cast(AsyncGenerator[bytes, None], body)
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

    async def read_tail(self) -> None:
        """Read what is left of the body if it is short and comes at once, else leave it.

        A body read to its end lets httpx keep the connection for the next call; one
        closed early costs a new connection (and its handshake) on both sides.
        """
        received = 0
        try:
            async with asyncio.timeout(TAIL_SECONDS):
                while received <= TAIL_BYTES:
                    chunk = await anext(self._chunks, None)
                    if chunk is None:
                        self.ended = True
                        return
                    received += len(chunk)
        except (TimeoutError, httpx.HTTPError):
            return  # the connection is closed with the stream

    async def aclose(self) -> None:
        await self._chunks.aclose()


class UpstreamEvents:
    """An upstream stream's events; a subclass turns each read's lines into events.

    Every event one network read completed is parsed at once (`buffered` then says more
    are here); a failure found among them comes after the events before it.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._lines = UpstreamLines(response)
        self._ready: deque[Event] = deque()
        self._failure: UpstreamFailure | None = None  # raised once the events before it are out

    @property
    def buffered(self) -> bool:
        """Whether the next event is here without waiting for the upstream."""
        return bool(self._ready) or self._failure is not None

    def _take(self, lines: list[bytes]) -> None:
        """Parse the lines of one read into `_ready`."""
        raise NotImplementedError

    def _done(self) -> bool:
        """Whether no event can follow those in `_ready`."""
        return self._lines.ended

    async def events(self) -> AsyncIterator[Event]:
        while True:
            try:
                event = await self._next()
            except UpstreamFailure as failure:
                code = (
                    "upstream_timeout" if failure.kind is FailureKind.TIMEOUT else "upstream_error"
                )
                yield StreamFailed(failure.message, code)
                return
            if event is None:
                return
            yield event
            if isinstance(event, StreamFailed):
                return

    async def aclose(self) -> None:
        if self._done() and not self._lines.ended:
            # The last event came before the body's end: read the end, keep the connection.
            await self._lines.read_tail()
        await self._lines.aclose()
        await self._response.aclose()

    async def _next(self) -> Event | None:
        while not self._ready:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._done():
                return None
            await self._fill()
        return self._ready.popleft()

    async def _fill(self) -> None:
        """Parse every event the next network read completed."""
        try:
            self._take(await self._lines.read())
        except UpstreamFailure as failure:
            self._failure = failure
