"""Stream chunks: the pre-encoded text chunk is byte for byte the full rendering."""

from __future__ import annotations

import orjson
import pytest

from gateway.openai_format import ChunkWriter


@pytest.mark.parametrize(
    "text", ["", "Hello ", 'quote " and \\ backslash', "line\nbreak", "ünïcödé ✓ 𝄞", "\x00\x1f"]
)
@pytest.mark.parametrize("model", ["gpt-4o-mini", 'odd "content":"" model'])
def test_text_chunks_are_the_full_chunk_encoding(text: str, model: str) -> None:
    writer = ChunkWriter(model)
    chunk = writer.content(text)
    assert chunk == writer._chunk({"content": text})
    assert chunk.startswith(b"data: ")
    assert chunk.endswith(b"\n\n")
    payload = orjson.loads(chunk[6:])
    assert payload["model"] == model
    assert payload["choices"] == [
        {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
    ]
