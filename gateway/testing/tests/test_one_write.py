"""The fake Puter's fast mode sends each response's head in the write of its body."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.testing.fake_puter import FakePuter, expected_text
from gateway.testing.live_servers import serve_in_thread
from gateway.testing.one_write import OneWriteHttp
from gateway.testing.tests.test_fake_puter import call_body


class Recorder:
    """A transport that keeps a copy of every write before passing it on."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport, self._writes = transport, writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def served_writes(protocol: type[HttpToolsProtocol]) -> tuple[list[bytes], list[str]]:
    """The writes of two answers and a stream on one connection, and the answers' texts."""
    writes: list[bytes] = []

    class Recorded(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # Recorded below the protocol's own wrapping, as the socket sees them.
            super().connection_made(Recorder(transport, writes))

    with (
        serve_in_thread(FakePuter(fast=True), "fake Puter", http=Recorded) as url,
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        texts = []
        for _ in range(2):
            reply = client.post("/drivers/call", json=call_body("gpt-4o-mini+chunks5"))
            texts.append(reply.json()["result"]["message"]["content"])
        stream = client.post("/drivers/call", json=call_body("gpt-4o-mini+chunks3", stream=True))
        texts.append("".join(line.get("text", "") for line in map(_json, stream.iter_lines())))
    return writes, texts


def _json(line: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(line)
    return value


@pytest.mark.parametrize("protocol", [OneWriteHttp, HttpToolsProtocol])
def test_each_answer_goes_in_one_write(protocol: type[HttpToolsProtocol]) -> None:
    writes, texts = served_writes(protocol)
    assert texts[:2] == [expected_text(5)] * 2
    assert texts[2] == expected_text(3)
    heads = [write for write in writes if write.startswith(b"HTTP/1.1 ")]
    assert len(heads) == 3
    alone = [head for head in heads if head.endswith(b"\r\n\r\n")]
    if protocol is OneWriteHttp:
        assert alone == []  # every head left with its body's first part
        assert len(writes) == 4  # two answers, the stream's head and lines, its end
    else:
        assert len(alone) == 3  # uvicorn's own protocol: each head alone
