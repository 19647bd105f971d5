"""A fake OpenAI-compatible server (`/v1/chat/completions`, `/v1/models`) for tests and demos.

It answers with the fake Puter's content and reads the same `+directive` suffixes of the
model name (`fake_scenarios`: `+chunks5`, `+pace100`, `+delay500`, `+failafter3`,
`+hangafter2`, `+nousage`, `+reasoning`, `+tools`, `+errorfirst`, `+http500`, `+down`), so
tests compute the same expected text and usage for both providers. The token's prefix
chooses account behaviours: `bad` 401, `broke` 429 `insufficient_quota`, `busy` 429
(`busyN`: with `Retry-After: N`), `crash` 500, `flakyN` 500 on every other run of N calls.
`/_fake/stats` counts calls and in-flight requests per token (its first 8 characters).

Run it standalone: `python -m gateway.testing.fake_openai --port N [--host H]`.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import uvicorn

from gateway.testing import fake_scenarios as scenarios
from gateway.testing.fake_puter import (
    Peer,
    Receive,
    Request,
    Scope,
    Send,
    Stats,
    read_body,
    redact_headers,
    send_json,
)
from gateway.testing.fake_scenarios import JsonDict, Turn

COMPLETION_ID = "chatcmpl-fakeopenai"
_BEHAVIOUR = re.compile(r"^(bad|broke|busy|crash|flaky)(\d*)")


@dataclass(eq=False)
class FakeError(Exception):
    status: int
    message: str
    type: str
    code: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def body(self) -> JsonDict:
        error = {"message": self.message, "type": self.type, "param": None, "code": self.code}
        return {"error": error}


@dataclass
class OpenAIStats(Stats):
    calls_by_token: dict[str, int] = field(default_factory=dict)

    def begin_token(self, key: str) -> None:
        super().begin_token(key)
        self.calls_by_token[key] = self.calls_by_token.get(key, 0) + 1


def token_error(token: str, call_index: int) -> FakeError | None:
    """The error a token's behaviour answers with on its `call_index`-th call (from 0)."""
    match = _BEHAVIOUR.match(token)
    if match is None:
        return None
    name, number = match[1], int(match[2] or 0)
    if name == "bad":
        return FakeError(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
    if name == "broke":
        return FakeError(
            429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
        )
    if name == "busy":
        headers = [(b"retry-after", str(number).encode())] if match[2] else []
        return FakeError(429, "Rate limit reached.", "requests", "rate_limit_exceeded", headers)
    if name == "crash" or (call_index // max(number, 1)) % 2 == 1:
        return FakeError(500, "The server had an error.", "server_error")
    return None


def _bearer(headers: dict[str, str]) -> str:
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() != "bearer " or not authorization[7:].strip():
        raise FakeError(401, "You didn't provide an API key.", "invalid_request_error")
    return authorization[7:].strip()


def _resolve(name: object) -> tuple[scenarios.FakeModel, scenarios.Scenario]:
    try:
        return scenarios.resolve(str(name))
    except scenarios.ModelNotFound:
        message = f"The model `{name}` does not exist or you do not have access to it."
        raise FakeError(404, message, "invalid_request_error", "model_not_found") from None
    except scenarios.ScenarioError as exc:
        raise FakeError(400, str(exc), "invalid_request_error") from None


def _error_first(message: str) -> FakeError:
    status = int(message.split(" ", 1)[0])
    if status == 429:
        return FakeError(429, message, "rate_limit_error", "rate_limit_exceeded")
    if status == 400:
        return FakeError(400, message, "invalid_request_error")
    return FakeError(503, message, "server_error")


def _chunk(model: str, delta: JsonDict, finish: str | None = None) -> JsonDict:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _tool_calls(turn: Turn) -> list[JsonDict]:
    arguments = orjson.dumps(scenarios.TOOL_INPUT).decode()
    return [
        {
            "index": i,
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for i, name in enumerate(turn.tools)
    ]


def _finish_reason(turn: Turn) -> str:
    return "tool_calls" if turn.tools else "length" if turn.truncated else "stop"


def _usage(turn: Turn) -> JsonDict:
    total = turn.prompt + turn.completion
    return {
        "prompt_tokens": turn.prompt,
        "completion_tokens": turn.completion,
        "total_tokens": total,
    }


def completion(turn: Turn) -> JsonDict:
    """A whole `chat.completion`."""
    message: JsonDict = {"role": "assistant", "content": "".join(turn.texts), "refusal": None}
    if turn.scenario.reasoning:
        message["reasoning_content"] = "".join(scenarios.REASONING_TEXTS)
    if turn.tools:
        message["tool_calls"] = [
            {k: v for k, v in c.items() if k != "index"} for c in _tool_calls(turn)
        ]
    reply: JsonDict = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": turn.model.id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(turn),
            }
        ],
    }
    if not turn.scenario.no_usage:
        reply["usage"] = _usage(turn)
    return reply


def stream_events(turn: Turn, *, include_usage: bool) -> list[tuple[JsonDict | None, bool]]:
    """(event, paced) pairs of a streamed reply; None stands for `[DONE]`."""
    model, scenario = turn.model.id, turn.scenario
    events: list[tuple[JsonDict | None, bool]] = [
        (_chunk(model, {"role": "assistant", "content": ""}), False)
    ]
    if scenario.reasoning:
        events += [
            (_chunk(model, {"reasoning_content": text}), True) for text in scenarios.REASONING_TEXTS
        ]
    events += [(_chunk(model, {"content": text}), True) for text in turn.texts]
    if scenario.fail_after is not None:
        error = FakeError(500, scenarios.MID_STREAM_ERROR, "server_error")
        return [*events, (error.body(), False)]
    if scenario.hang_after is not None:
        return events
    for call in _tool_calls(turn):
        events.append((_chunk(model, {"tool_calls": [call]}), True))
    events.append((_chunk(model, {}, _finish_reason(turn)), False))
    if include_usage and not scenario.no_usage:
        events.append(({**_chunk(model, {}), "choices": [], "usage": _usage(turn)}, False))
    return [*events, (None, False)]


async def send_events(
    request: Request,
    peer: Peer,
    stats: Stats,
    events: list[tuple[JsonDict | None, bool]],
    *,
    pace: float,
    hang: bool,
) -> bool:
    """Send SSE events one body message each; False when the client left first."""
    times = stats.last_stream_line_times
    times.clear()
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await request.send({"type": "http.response.start", "status": 200, "headers": headers})
    for event, paced in events:
        if not await peer.pause(pace if paced and times else 0):
            return False
        data = b"[DONE]" if event is None else orjson.dumps(event)
        if paced:
            times.append(time.monotonic())
        await request.send(
            {"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True}
        )
    if hang:
        await peer.gone.wait()
        return False
    await request.send({"type": "http.response.body", "body": b""})
    return True


class FakeOpenAI:
    """The ASGI app."""

    def __init__(self) -> None:
        self.stats = OpenAIStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = Request(scope=scope, receive=receive, send=send, headers=headers)
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/chat/completions"):
            await self._chat(request)
        elif route == ("GET", "/v1/models"):
            await self._models(request)
        elif route == ("GET", "/_fake/stats"):
            await send_json(send, 200, self.stats.snapshot())
        elif route == ("POST", "/_fake/reset"):
            self.stats = OpenAIStats()
            await send_json(send, 200, {"ok": True})
        else:
            await send_json(send, 404, FakeError(404, "Not found.", "invalid_request_error").body())

    async def _models(self, request: Request) -> None:
        # Like OpenAI: listing needs a valid key, not credits, and has limits of its own.
        try:
            token = _bearer(request.headers)
        except FakeError as err:
            await send_json(request.send, err.status, err.body())
            return
        refusal = token_error(token, 0)
        if refusal is not None and refusal.status == 401:
            await send_json(request.send, refusal.status, refusal.body())
            return
        data = [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
            for m in scenarios.listed_models()
        ]
        await send_json(request.send, 200, {"object": "list", "data": data})

    async def _chat(self, request: Request) -> None:
        stats, peer, key = self.stats, Peer(request.receive), None
        stats.begin(request.scope)
        try:
            body = await read_body(request.receive)
            if body is None:
                return
            peer.start()
            token = _bearer(request.headers)
            key = token[:8]
            stats.begin_token(key)
            payload = self._accept(request, body)
            error = token_error(token, stats.calls_by_token[key] - 1)
            if error is not None:
                raise error
            await self._answer(request, peer, payload)
        except FakeError as err:
            await send_json(request.send, err.status, err.body(), err.headers)
        finally:
            await peer.close()
            stats.end(key)

    def _accept(self, request: Request, body: bytes) -> JsonDict:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        self.stats.requests.append(
            {
                "path": request.scope["path"],
                "headers": redact_headers(request.headers),
                "body": payload,
            }
        )
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise FakeError(400, "messages is required.", "invalid_request_error")
        return payload

    async def _answer(self, request: Request, peer: Peer, payload: JsonDict) -> None:
        model, scenario = _resolve(payload.get("model"))
        if not await peer.pause(scenario.delay_ms / 1000):
            self.stats.streams_disconnected += 1
            return
        if scenario.http500 or scenario.down:
            raise FakeError(
                500 if scenario.http500 else 503, "The server is unavailable.", "server_error"
            )
        args = {
            **payload,
            "max_tokens": payload.get("max_completion_tokens") or payload.get("max_tokens"),
        }
        turn = scenarios.plan_turn(model, scenario, args, v1=False)
        if payload.get("stream") is not True:
            await self._complete(request, peer, turn)
            return
        if scenario.error_first is not None:
            events: list[tuple[JsonDict | None, bool]] = [
                (_error_first(scenario.error_first).body(), False)
            ]
        else:
            include = bool((payload.get("stream_options") or {}).get("include_usage"))
            events = stream_events(turn, include_usage=include)
        ended = await send_events(
            request, peer, self.stats, events, pace=scenario.pace_ms / 1000, hang=scenario.hangs
        )
        if ended:
            self.stats.streams_completed += 1
        else:
            self.stats.streams_disconnected += 1

    async def _complete(self, request: Request, peer: Peer, turn: Turn) -> None:
        scenario = turn.scenario
        if scenario.error_first is not None:
            raise _error_first(scenario.error_first)
        if scenario.fail_after is not None:
            raise FakeError(500, scenarios.MID_STREAM_ERROR, "server_error")
        if scenario.hang_after is not None:
            await peer.gone.wait()
            self.stats.streams_disconnected += 1
            return
        await send_json(request.send, 200, completion(turn))


app = FakeOpenAI()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args(argv)
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
