"""The upstreams alone at concurrency 1, timed just before each configuration: the latency a
proxy adds is its own p50 less that of the upstream it calls.

The bare proxy calls the shared fake; the gateway's Puter configurations call the project's
fake Puter, which answers more slowly (an ASGI app on uvicorn, where the shared fake is raw
httptools: 0.148 against 0.091 ms p50 here, though in its fast mode it too sends each answer
in one write): measured from the shared fake, the difference counted as the gateway's.
Both are timed with the load generator's own client (raw asyncio and httptools, one
keep-alive connection), as its runs are.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import orjson
import uvloop

from gateway.providers.puter_wire import chat_args, drivers_call


@functools.cache
def _loadgen(shared: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadgen", shared / "loadgen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_request(shared: Path, base_url: str, model: str) -> tuple[str, bytes]:
    """The load generator's own non-streaming request, against the shared fake."""
    raw: bytes = _loadgen(shared).build_request(base_url + "/v1", "", model, False, [])[0]
    return base_url, raw


def puter_request(shared: Path, base_url: str, model: str, token: str) -> tuple[str, bytes]:
    """The /drivers/call the gateway sends for a non-streaming chat of the same prompt."""
    chat = {"model": model, "messages": [{"role": "user", "content": _loadgen(shared).PROMPT}]}
    body = orjson.dumps(drivers_call("ai-chat", chat_args(chat, stream=False), token))
    head = [
        "POST /drivers/call HTTP/1.1",
        f"Host: {urlsplit(base_url).netloc}",
        "Content-Type: application/json",
        f"Authorization: Bearer {token}",
        f"Content-Length: {len(body)}",
    ]
    return base_url, ("\r\n".join(head) + "\r\n\r\n").encode() + body


def measure(
    shared: Path, label: str, request: tuple[str, bytes], seconds: float, out: Path
) -> None:
    """`seconds` of back-to-back requests after one of warm-up; p50 and p99 to out/label.json."""
    base_url, raw = request
    latencies = uvloop.run(_closed_loop(_loadgen(shared), base_url, raw, seconds))
    latencies.sort()
    result = {
        "label": label,
        "nonstream": [
            {
                "concurrency": 1,
                "completed": len(latencies),
                "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
                "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            }
        ],
    }
    (out / f"{label}.json").write_text(json.dumps(result))


async def _closed_loop(
    loadgen: ModuleType, base_url: str, raw: bytes, seconds: float
) -> list[float]:
    url = urlsplit(base_url)
    loop = asyncio.get_running_loop()
    _transport, client = await loop.create_connection(
        lambda: loadgen.ClientProto(None), url.hostname or "127.0.0.1", url.port or 80
    )
    latencies: list[float] = []
    try:
        warm_until = time.perf_counter() + 1.0
        deadline = warm_until + seconds
        while (now := time.perf_counter()) < deadline:
            await asyncio.wait_for(client.request(raw), 10)
            if client.status != 200:
                raise SystemExit(f"{base_url} answered {client.status}: {b''.join(client.body)!r}")
            if now >= warm_until:
                latencies.append(client.t_end - client.t0)
    finally:
        client.transport.close()
    return latencies
