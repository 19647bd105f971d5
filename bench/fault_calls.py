"""The fault load's calls: the seeded plan, and what each client received over HTTP."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from gateway.tokens import count_text


@dataclass(frozen=True)
class Call:
    """One planned request: its scenario, and the content chunks its client should get."""

    request_id: str
    kind: str  # a key of bench.fault_check.SCENARIO_ROWS
    model: str
    stream: bool
    chunks: int


@dataclass
class Received:
    """What one client got."""

    status: int = 0
    code: str = ""
    texts: list[str] = field(default_factory=list)
    usage: int | None = None  # completion tokens the gateway told the client
    done: bool = False
    while_down: bool = False
    span: tuple[float, float] = (0.0, 0.0)  # time.monotonic() when sent and when over

    @property
    def reply(self) -> str:
        return f"{self.status} {self.code}".strip()

    @property
    def tokens(self) -> int:
        """Completion tokens of what arrived: the gateway's figure, else counted as it counts."""
        return self.usage if self.usage is not None else count_text("".join(self.texts))


def plan_calls(requests: int, seed: int, tag: str) -> list[Call]:
    """80 % normal, 5 % faults before the first byte, 5 % after it, 10 % clients leaving.

    A leaving client reads k chunks of a stream whose upstream falls silent after k
    (`hangafterK`), then closes: whatever the load, the gateway cannot have sent more than
    that client read, so the tokens it counts must be exactly those.
    """
    rng = random.Random(seed)  # noqa: S311  # a plan to replay, not a secret
    calls: list[Call] = []
    for i in range(requests):
        request_id, roll, n = f"fl-{tag}-{i:05d}", rng.random(), rng.randint(1, 20)
        if roll < 0.80:
            calls.append(Call(request_id, "ok", f"gpt-4o-mini+chunks{n}", rng.random() < 0.5, n))
        elif roll < 0.85:
            fault, stream = rng.choice(
                [("http500", False), ("http500", True), ("errorfirst", True)]
            )
            calls.append(Call(request_id, "fault_before", f"gpt-4o-mini+{fault}", stream, 0))
        elif roll < 0.90:
            model = f"gpt-4o-mini+chunks20+failafter{n // 2 + 1}"
            calls.append(Call(request_id, "fault_after", model, True, n // 2 + 1))
        else:
            model = f"gpt-4o-mini+pace20+hangafter{n // 3 + 1}"
            calls.append(Call(request_id, "disconnect", model, True, n // 3 + 1))
    return calls


async def send(client: httpx.AsyncClient, call: Call) -> Received:
    body: dict[str, Any] = {
        "model": call.model,
        "messages": [{"role": "user", "content": f"call {call.request_id}"}],
        "stream": call.stream,
    }
    headers = {"x-request-id": call.request_id}
    if not call.stream:
        return _whole_reply(await client.post("/v1/chat/completions", json=body, headers=headers))
    body["stream_options"] = {"include_usage": True}
    received = Received()
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply:
        received.status = reply.status_code
        if reply.status_code != 200:
            received.code = _error_code(orjson.loads(await reply.aread()))
            return received
        async for line in reply.aiter_lines():
            if line.startswith("data: ") and _take_event(received, line[6:]):
                break
            if call.kind == "disconnect" and len(received.texts) >= call.chunks:
                break  # leaving the block closes the connection mid-stream
    return received


def _whole_reply(reply: httpx.Response) -> Received:
    payload = orjson.loads(reply.content)
    if reply.status_code != 200:
        return Received(status=reply.status_code, code=_error_code(payload))
    return Received(
        status=200,
        texts=[payload["choices"][0]["message"]["content"]],
        usage=payload["usage"]["completion_tokens"],
        done=True,
    )


def _error_code(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    return str(error.get("code") or error.get("type")) if isinstance(error, dict) else "?"


def _take_event(received: Received, data: str) -> bool:
    """Note one SSE event; whether the stream is over."""
    if data == "[DONE]":
        received.done = True
        return True
    event = orjson.loads(data)
    if "error" in event:
        received.code = _error_code(event)
    if event.get("usage"):
        received.usage = event["usage"]["completion_tokens"]
    for choice in event.get("choices") or []:
        text = (choice.get("delta") or {}).get("content")
        if text:
            received.texts.append(text)
    return False
