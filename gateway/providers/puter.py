"""The Puter provider: `POST /drivers/call` as PUTER.md part A decides."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import httpx
import orjson
from django.conf import settings

from gateway.providers.base import (
    ChatResult,
    ChatStream,
    Event,
    FailureKind,
    ReasoningDelta,
    StreamFailed,
    TextDelta,
    UpstreamFailure,
    UpstreamTarget,
    UsageEvent,
    token_hidden,
)
from gateway.providers.json_replies import read_json
from gateway.providers.playback import ResultStream, collect
from gateway.providers.puter_wire import (
    chat_args,
    chat_result,
    classify,
    classify_stream_error,
    drivers_call,
    error_details,
    is_driver_style_error,
    legacy_driver,
    normalize_usage,
    tool_call_of,
)
from gateway.providers.upstream_lines import UpstreamEvents
from gateway.upstream_client import parsed_url

USER_AGENT = "puter-gateway/0.1 (+https://github.com/puter-gateway)"


@lru_cache(maxsize=1)
def _extra_headers(raw: str) -> dict[str, str]:
    return dict(json.loads(raw)) if raw else {}


def puter_headers(token: str, *, stream: bool) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "*/*",
        "User-Agent": USER_AGENT,
        **_extra_headers(settings.PUTER_EXTRA_HEADERS),
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if stream:
        # Compression would batch NDJSON lines (and audio chunks): ask for none.
        headers["Accept-Encoding"] = "identity"
    return headers


def puter_base(target: UpstreamTarget) -> str:
    """The upstream's own address, else Puter's."""
    return target.base_url or settings.PUTER_API_BASE


def drivers_call_url(target: UpstreamTarget) -> httpx.URL:
    return parsed_url(puter_base(target) + "/drivers/call")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class PuterProvider:
    def __init__(self) -> None:
        # Per upstream: does it want legacy (v1) driver names? Learnt from its replies.
        self._legacy: dict[int, bool] = {}

    async def complete(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatResult:
        with token_hidden(target):
            args = chat_args(request, stream=False)
            reply = await self._call(client, target, args, stream=False)
            if isinstance(reply, httpx.Response):  # a stream nobody asked for: drain it
                stream = NdjsonStream(reply, request["model"])
                await stream.start()
                return await collect(stream)
            return chat_result(reply, request["model"])

    async def open_stream(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: dict[str, Any]
    ) -> ChatStream:
        with token_hidden(target):
            reply = await self._call(client, target, chat_args(request, stream=True), stream=True)
            if isinstance(reply, httpx.Response):
                stream = NdjsonStream(reply, request["model"])
                await stream.start()
                return stream
            # Branch on what came back, not on what was asked: a JSON answer is complete.
            return ResultStream(chat_result(reply, request["model"]))

    async def list_models(
        self, client: httpx.AsyncClient, target: UpstreamTarget
    ) -> list[dict[str, Any]]:
        base = puter_base(target)
        for path in ("/puterai/chat/models/details", "/puterai/chat/models"):
            try:
                response = await client.get(base + path, headers=puter_headers("", stream=False))
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                models = response.json().get("models")
                if isinstance(models, list):
                    return [m if isinstance(m, dict) else {"id": str(m)} for m in models]
        raise UpstreamFailure(FailureKind.SERVER, "the upstream model list is unavailable")

    async def _call(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        args: dict[str, Any],
        *,
        stream: bool,
    ) -> httpx.Response | Any:
        """An NDJSON response left open, or a parsed JSON success body."""
        legacy = self._legacy.get(target.id, False)
        for attempt in (1, 2):
            driver = legacy_driver(args["model"]) if legacy else "ai-chat"
            response = await self._send(client, target, driver, args, stream=stream)
            if response.is_success and "ndjson" in response.headers.get("content-type", ""):
                self._legacy[target.id] = legacy
                return response
            body = await read_json(response)
            details = error_details(response.status_code, body)
            if details is None:
                self._legacy[target.id] = legacy
                return body
            status, code, message = details
            if attempt == 1 and is_driver_style_error(status, code, message):
                legacy = not legacy  # the other generation's driver naming, once
                continue
            raise classify(status, code, message, _retry_after(response))
        raise AssertionError("unreachable")

    async def _send(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        driver: str,
        args: dict[str, Any],
        *,
        stream: bool,
    ) -> httpx.Response:
        request = client.build_request(
            "POST",
            drivers_call_url(target),
            content=orjson.dumps(drivers_call(driver, args, target.token)),
            headers=puter_headers(target.token, stream=stream),
        )
        try:
            return await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            kind = (
                FailureKind.SERVER if isinstance(exc, httpx.ConnectTimeout) else FailureKind.TIMEOUT
            )
            raise UpstreamFailure(kind, "the upstream did not answer in time", status=504) from None
        except httpx.HTTPError:
            raise UpstreamFailure(
                FailureKind.SERVER, "the upstream could not be reached", status=502
            ) from None


class NdjsonStream(UpstreamEvents):
    """Puter's NDJSON chat stream as normalised events (PUTER.md B 2.5)."""

    def __init__(self, response: httpx.Response, model: str) -> None:
        super().__init__(response)
        self._model = model
        self._texts = 0
        self._others = 0

    async def start(self) -> None:
        """Read the first event: it decides whether this upstream answered."""
        try:
            while not (self._ready or self._done() or self._failure):
                await self._fill()
            if self._failure is not None and not self._ready:
                raise self._failure
        except UpstreamFailure:
            await self.aclose()
            raise
        first = self._ready[0] if self._ready else None
        if first is None or isinstance(first, StreamFailed):
            await self.aclose()
            if first is None:
                raise UpstreamFailure(
                    FailureKind.SERVER, "the upstream stream ended before any event", status=502
                )
            raise classify_stream_error(first.message)

    def _take(self, lines: list[bytes]) -> None:
        for line in lines:
            if line.strip():
                event = self._parse(line)
                if event is not None:
                    self._ready.append(event)

    def _parse(self, line: bytes) -> Event | None:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(
                FailureKind.SERVER, "the upstream sent a malformed line"
            ) from None
        if not isinstance(item, dict):
            raise UpstreamFailure(FailureKind.SERVER, "the upstream sent a malformed line")
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str) and item["text"]:
            self._texts += 1
            return TextDelta(item["text"])
        self._others += 1
        if kind == "reasoning" and isinstance(item.get("reasoning"), str):
            return ReasoningDelta(item["reasoning"])
        if kind == "tool_use":
            return tool_call_of(item)
        if kind == "error":
            return StreamFailed(str(item.get("message") or "the upstream failed")[:300])
        if kind == "usage":
            return self._usage(item)
        return None  # extra_content, compaction and whatever comes next

    def _usage(self, item: dict[str, Any]) -> Event | None:
        raw = item.get("usage")
        if raw == {"usd_cents": None} and self._texts == 1 and self._others == 1:
            # One text line and an empty usage line: Puter's silent substitution.
            return StreamFailed("the upstream replaced the answer")
        usage = normalize_usage(raw, self._model)
        return UsageEvent(usage) if usage is not None else None
