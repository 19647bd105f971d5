"""uvicorn's HTTP protocol with each response's head sent in the write of its body's first
part, for the fake Puter's fast mode.

uvicorn writes a response's head as soon as the application starts the response and its
body after, so the client reads them apart: two wakes and two parses for every answer, where
../shared/bench's fake upstream, which the bare proxy calls in the same benchmark, sends each
answer in one write. Side by side on one gateway at c=1 the two writes cost it 0.22 ms of CPU
and 0.25 ms of latency per request (five alternations).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadWithBody:
    """A transport that holds a response's head until the next write, then sends both."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._head = data  # uvicorn writes every body after its head, if only b""
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttp(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]
