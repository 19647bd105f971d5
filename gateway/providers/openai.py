"""A generic OpenAI-compatible provider: any server that speaks `/v1/chat/completions`.

OpenAI itself, vLLM, Ollama, LM Studio, llama.cpp's server: a base URL and a key. Requests
go through as the client sent them; replies are read into the same events as Puter's.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from gateway.providers.base import (
    ChatResult,
    ChatStream,
    Event,
    FailureKind,
    Finish,
    ReasoningDelta,
    StreamFailed,
    TextDelta,
    ToolCallEvent,
    UpstreamFailure,
    UpstreamTarget,
    Usage,
    UsageEvent,
    token_hidden,
)
from gateway.providers.json_replies import read_json
from gateway.providers.playback import ResultStream, collect
from gateway.providers.upstream_lines import UpstreamEvents
from gateway.upstream_client import parsed_url

USER_AGENT = "puter-gateway/0.1 (+https://github.com/puter-gateway)"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})


def endpoint(target: UpstreamTarget, path: str) -> str:
    """`https://host` and `https://host/v1` are both accepted as a base URL."""
    base = target.base_url.rstrip("/")
    return f"{base}{path}" if base.endswith("/v1") else f"{base}/v1{path}"


class OpenAIProvider:
    async def complete(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatResult:
        with token_hidden(target):
            response = await _send(client, target, request_body(request, stream=False))
            if _is_event_stream(response):  # a stream nobody asked for: drain it
                stream = SseStream(response)
                await stream.start()
                return await collect(stream)
            return chat_result(await read_json(response))

    async def open_stream(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatStream:
        with token_hidden(target):
            response = await _send(client, target, request_body(request, stream=True))
            if not _is_event_stream(response):
                # Branch on what came back, not on what was asked: a JSON answer is complete.
                return ResultStream(chat_result(await read_json(response)))
            stream = SseStream(response)
            await stream.start()
            return stream

    async def list_models(
        self, client: httpx.AsyncClient, target: UpstreamTarget
    ) -> list[dict[str, Any]]:
        """`GET /v1/models` with the key: this also proves that the key works."""
        request = client.build_request(
            "GET", endpoint(target, "/models"), headers=_headers(target, stream=False)
        )
        with token_hidden(target):
            body = await read_json(await _open(client, request))
        models = body.get("data") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise UpstreamFailure(FailureKind.SERVER, "the upstream sent no model list", status=502)
        return [
            {"id": item["id"], "provider": str(item.get("owned_by") or "openai")}
            for item in models
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]


def request_body(request: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    body = {**request, "stream": stream}
    if stream:
        # Ask for the usage chunk whatever the client asked: the row wants exact figures.
        body["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)  # OpenAI refuses it on a non-streaming call
    return body


def _headers(target: UpstreamTarget, *, stream: bool) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": USER_AGENT,
    }
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    if stream:
        headers["Accept-Encoding"] = "identity"  # compression would batch events
    return headers


async def _send(
    client: httpx.AsyncClient, target: UpstreamTarget, body: dict[str, Any]
) -> httpx.Response:
    url = parsed_url(endpoint(target, "/chat/completions"))
    headers = _headers(target, stream=body["stream"])
    request = client.build_request("POST", url, content=orjson.dumps(body), headers=headers)
    return await _open(client, request)


async def _open(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """The upstream's 2xx response, left open; any other status is an UpstreamFailure."""
    try:
        response = await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        connect = isinstance(exc, httpx.ConnectTimeout)
        kind = FailureKind.SERVER if connect else FailureKind.TIMEOUT
        raise UpstreamFailure(kind, "the upstream did not answer in time", status=504) from None
    except httpx.HTTPError:
        unreachable = "the upstream could not be reached"
        raise UpstreamFailure(FailureKind.SERVER, unreachable, status=502) from None
    if not response.is_success:
        body = await read_json(response)
        raise classify(response.status_code, body, retry_after(response.headers))
    return response


def _is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


# --- errors ----------------------------------------------------------------------------


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (an HTTP date counts as absent)."""
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        return max(float(headers["retry-after"]), 0.0) if "retry-after" in headers else None
    except ValueError:
        return None


def error_parts(body: Any) -> tuple[str, str]:
    """(message, code words) of an error body in OpenAI's shape or a looser one."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or "upstream error")
        words = " ".join(str(error.get(name) or "") for name in ("code", "type"))
        return message[:300], words.lower()
    return str(error or "upstream error")[:300], ""


def classify(status: int, body: Any, wait: float | None = None) -> UpstreamFailure:
    """Map an HTTP error to what the pool does with the upstream (DESIGN.md 10)."""
    message, words = error_parts(body)
    lowered = message.lower()
    kind: FailureKind
    # OpenAI says "out of credits" with a 429: read the code before the status.
    if status == 402 or "insufficient_quota" in words:
        kind = FailureKind.QUOTA
    elif status == 401:
        kind = FailureKind.AUTH
    elif status == 403:
        kind = FailureKind.FORBIDDEN_MODEL if "model" in lowered else FailureKind.AUTH
    elif status == 429:
        kind = FailureKind.RATE_LIMITED
    elif status == 404:
        # A 404 that names no model is a wrong base URL: the upstream's fault, not the client's.
        named = "model" in lowered or "model_not_found" in words
        kind = FailureKind.MODEL_NOT_FOUND if named else FailureKind.SERVER
    elif status >= 500 or status in {408, 409}:
        kind = FailureKind.SERVER
    else:
        kind = FailureKind.BAD_REQUEST
    return UpstreamFailure(kind, message, status=status, retry_after=wait)


def classify_event(error: Any) -> UpstreamFailure:
    """An error event that came before any answer: judge it by its code and words."""
    message, words = error_parts({"error": error})
    text = f"{words} {message}".lower()
    if "insufficient_quota" in text:
        return UpstreamFailure(FailureKind.QUOTA, message, status=402)
    if "rate_limit" in text or "rate limit" in text:
        return UpstreamFailure(FailureKind.RATE_LIMITED, message, status=429)
    if "invalid_request" in text:
        return UpstreamFailure(FailureKind.BAD_REQUEST, message, status=400)
    return UpstreamFailure(FailureKind.SERVER, message, status=502)


# --- replies ---------------------------------------------------------------------------


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    counts = [raw.get("prompt_tokens"), raw.get("completion_tokens")]
    prompt, completion = (n if isinstance(n, int) and n >= 0 else None for n in counts)
    if prompt is None and completion is None:
        return None
    return Usage(prompt or 0, completion or 0)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _finish(reason: Any) -> str:
    return reason if reason in FINISH_REASONS else "stop"


def chat_result(body: Any) -> ChatResult:
    """A non-streamed `chat.completion` as a result."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamFailure(FailureKind.SERVER, "the upstream sent no choices", status=502)
    message = choices[0].get("message") or {}
    calls = [_tool_call(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    reason = _finish(choices[0].get("finish_reason"))
    return ChatResult(
        content=_text(message.get("content")),
        reasoning=_text(message.get("reasoning_content") or message.get("reasoning")),
        tool_calls=calls,
        finish_reason="tool_calls" if calls else reason,
        usage=_usage(body.get("usage")),
        served_model=str(body.get("model") or ""),
    )


def _tool_call(call: dict[str, Any]) -> ToolCallEvent:
    function = call.get("function") or {}
    arguments = str(function.get("arguments") or "")
    return ToolCallEvent(str(call.get("id") or ""), str(function.get("name") or ""), arguments)


class SseStream(UpstreamEvents):
    """An OpenAI chat stream as normalised events; tool calls are whole once complete."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)
        self._data: list[bytes] = []  # the data lines of the event being read
        self._calls: dict[int, dict[str, str]] = {}
        self._payloads = 0
        self._first_failed = False
        self._ended = False
        self._error: UpstreamFailure | None = None  # the last error event, classified

    async def start(self) -> None:
        """Read the first chunk: it decides whether this upstream answered.

        A well-formed chunk without text (the usual first one, with the role) is enough:
        waiting for the first token would hold the client's first byte back with it.
        """
        try:
            while not (self._payloads or self._done() or self._failure):
                await self._fill()
            if self._failure is not None and not self._payloads:
                raise self._failure
        except UpstreamFailure:
            await self.aclose()
            raise
        if self._first_failed or not self._payloads:
            await self.aclose()
            if not self._payloads:
                raise UpstreamFailure(
                    FailureKind.SERVER, "the upstream stream ended before any event", status=502
                )
            message = next(e.message for e in self._ready if isinstance(e, StreamFailed))
            raise self._error or UpstreamFailure(FailureKind.SERVER, message, status=502)

    def _done(self) -> bool:
        return self._ended  # [DONE] may come before the body ends

    def _take(self, lines: list[bytes]) -> None:
        for line in lines:
            self._take_line(line.rstrip(b"\r"))
        if self._lines.ended:
            if self._data:
                self._payload(b"\n".join(self._data))
            self._end()

    def _take_line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            self._data.append(line[5:].strip())
        elif not line and self._data:
            data, self._data = b"\n".join(self._data), []
            self._payload(data)

    def _payload(self, data: bytes) -> None:
        if self._ended:
            return
        if data == b"[DONE]":
            self._end()
            return
        before = len(self._ready)
        self._parse(data)
        if not self._payloads:
            self._first_failed = any(
                isinstance(event, StreamFailed) for event in list(self._ready)[before:]
            )
        self._payloads += 1

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._ready.extend(self._tool_calls())

    def _parse(self, data: bytes) -> None:
        try:
            item = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                FailureKind.SERVER, "the upstream sent a malformed event"
            ) from None
        if not isinstance(item, dict):
            raise UpstreamFailure(FailureKind.SERVER, "the upstream sent a malformed event")
        if "error" in item or item.get("object") == "error":
            self._error = classify_event(item.get("error", item))
            self._ready.append(StreamFailed(self._error.message))
            return
        for choice in item.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)
        usage = _usage(item.get("usage"))
        if usage is not None:
            self._ready.append(UsageEvent(usage))

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._ready.append(ReasoningDelta(reasoning))
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._ready.append(TextDelta(delta["content"]))
        for part in delta.get("tool_calls") or []:
            call = self._calls.setdefault(int(part.get("index", 0)), {"id": "", "name": ""})
            function = part.get("function") or {}
            call["id"] = call["id"] or str(part.get("id") or "")
            call["name"] += str(function.get("name") or "")
            call["arguments"] = call.get("arguments", "") + str(function.get("arguments") or "")
        if choice.get("finish_reason"):
            self._ready.extend(self._tool_calls())
            self._ready.append(Finish(_finish(choice["finish_reason"])))

    def _tool_calls(self) -> list[Event]:
        calls, self._calls = self._calls, {}
        return [
            ToolCallEvent(call["id"], call["name"], call.get("arguments", ""))
            for _, call in sorted(calls.items())
        ]
