"""The path of one image or speech call: admit, try media upstreams, reply, write its row."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from accounts.keys import KeyFacts
from accounts.models import Endpoint, UsageStatus
from gateway.admission import Refused, Route, admit_request
from gateway.errors import OpenAIError, invalid_request
from gateway.media_store import store_images
from gateway.pool import Lease
from gateway.providers.base import Media, MediaStream, UpstreamFailure, UpstreamTarget, Usage
from gateway.providers.media_registry import media_provider_for, media_targets
from gateway.providers.puter_media import DEFAULT_IMAGE_MODEL
from gateway.relay import (
    database_failed,
    failover_routes,
    finish,
    gateway_failed,
    new_meter,
)
from gateway.sse import ClosingStreamResponse
from gateway.tokens import count_text
from gateway.upstream_client import upstream_client
from gateway.usage import Outcome, UsageMeter, no_usage

MEDIA_ROUTE = "/v1/files/media/"
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


@asynccontextmanager
async def metered(
    meter: UsageMeter, usage: Usage | None = None, *, estimated: bool = False
) -> AsyncIterator[None]:
    """Write the row of a call that is refused, fails or is abandoned; re-raise."""
    try:
        yield
    except Refused as refused:
        error = refused.error
        await finish(meter, Outcome(refused.status, error.status, no_usage(), error=error.message))
        raise error from None
    except OpenAIError as error:
        # Usually `failover_routes` wrote the row already; then this writes nothing.
        clients_fault = error.status in (400, 404)
        status = UsageStatus.INVALID_REQUEST if clients_fault else UsageStatus.UPSTREAM_ERROR
        await finish(meter, Outcome(status, error.status, no_usage(), error=error.message))
        error.headers = {**granted_headers(meter), **error.headers}
        raise
    except asyncio.CancelledError:
        left = Outcome(UsageStatus.CLIENT_DISCONNECTED, 499, usage or no_usage(), estimated)
        await finish(meter, left)
        raise
    except DatabaseError:
        await finish(meter, database_failed())
        raise
    except Exception:
        # The gateway's own failure: upstream failures arrive as OpenAIError above.
        await finish(meter, gateway_failed())
        raise


async def admit_media(request: HttpRequest, key: KeyFacts, meter: UsageMeter) -> list[Route]:
    """Admit the call (its limits held in the meter) and the media upstreams to try."""
    admission = await admit_request(
        key=key,
        model=meter.model,
        client_ip=request.META.get("REMOTE_ADDR", ""),
        now=meter.created,
    )
    meter.grant = admission.grant
    return [Route(route.model, media_targets(route.targets)) for route in admission.routes]


def granted_headers(meter: UsageMeter) -> dict[str, str]:
    return dict(meter.grant.headers) if meter.grant is not None else {}


def json_response(payload: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(orjson.dumps(payload), content_type="application/json", headers=headers)


# --- images ----------------------------------------------------------------------------


async def generate_images(
    request: HttpRequest,
    key: KeyFacts,
    *,
    prompt: str,
    model: str | None,
    n: int,
    size: str | None,
    quality: str | None,
    response_format: str,
) -> HttpResponse:
    """`n` image calls, one after another (Puter caps an account's concurrent calls)."""
    model = model or DEFAULT_IMAGE_MODEL
    meter = new_meter(request, key, Endpoint.IMAGES, {"model": model})
    client = upstream_client()

    async def call(target: UpstreamTarget, served: str) -> Media:
        provider = media_provider_for(target)
        return await provider.generate_image(
            client, target, prompt=prompt, model=served, size=size, quality=quality
        )

    async with metered(meter):
        base = media_base_url(request) if response_format == "url" else ""
        routes = await admit_media(request, key, meter)
        images = [await _one_image(meter, routes, call) for _ in range(n)]
        data = await _image_data(images, base)
    # Puter reports no tokens for images: the row counts the call, not tokens.
    await finish(meter, Outcome(UsageStatus.OK, 200, no_usage()))
    return json_response({"created": int(time.time()), "data": data}, granted_headers(meter))


async def _one_image(
    meter: UsageMeter,
    routes: list[Route],
    call: Callable[[UpstreamTarget, str], Awaitable[Media]],
) -> Media:
    """One of the `n` image calls, failing over between upstreams."""
    # A copy of the meter: its own clock for the relay's limit on starting tries, and no
    # row of its own (the request's one row is written after the last image).
    one = replace(meter, started=time.perf_counter(), recorded=True)
    try:
        return await failover_routes(one, routes, call)
    finally:
        meter.upstream_id, meter.upstream_label = one.upstream_id, one.upstream_label
        meter.upstream_model = one.upstream_model


def media_base_url(request: HttpRequest) -> str:
    """Where clients reach this gateway: PUBLIC_BASE_URL, else the request's own origin."""
    if settings.PUBLIC_BASE_URL:
        return str(settings.PUBLIC_BASE_URL)
    try:
        return request.build_absolute_uri("/").rstrip("/")
    except DisallowedHost:
        raise invalid_request(
            "The Host header names no host this gateway serves; the operator may set "
            "PUBLIC_BASE_URL."
        ) from None


async def _image_data(images: list[Media], base: str) -> list[dict[str, str]]:
    """`url` entries under `base` when it is set, else `b64_json` ones."""
    if not base:
        return [{"b64_json": base64.b64encode(image.content).decode()} for image in images]
    names = await asyncio.to_thread(store_images, images)
    return [{"url": f"{base}{MEDIA_ROUTE}{name}"} for name in names]


# --- speech ----------------------------------------------------------------------------


async def synthesize_speech(
    request: HttpRequest,
    key: KeyFacts,
    *,
    text: str,
    model: str,
    voice: str,
    response_format: str,
) -> HttpResponseBase:
    """Audio streamed through as Puter sends it; the prompt is the input's token count."""
    meter = new_meter(request, key, Endpoint.SPEECH, {"model": model, "stream": True})
    usage = Usage(count_text(text), 0)
    client = upstream_client()

    async def call(target: UpstreamTarget, served: str) -> MediaStream:
        provider = media_provider_for(target)
        return await provider.synthesize_speech(
            client, target, text=text, model=served, voice=voice, response_format=response_format
        )

    async with metered(meter, usage, estimated=True):
        routes = await admit_media(request, key, meter)
        upstream = await failover_routes(meter, routes, call, hold=HeldMediaStream)
    source = relay_media(upstream, meter, usage)
    # Start the relay here, so that its `finally` owns the upstream and the row from now on.
    first = await anext(source, b"")
    content_type = upstream.content_type
    if not content_type.startswith("audio/"):
        content_type = AUDIO_TYPES.get(response_format, "audio/mpeg")
    return ClosingStreamResponse(
        source, content_type=content_type, first=first, headers=granted_headers(meter)
    )


async def relay_media(
    upstream: MediaStream, meter: UsageMeter, usage: Usage
) -> AsyncGenerator[bytes, None]:
    """Upstream bytes to the client as they arrive; the row is written whatever happens."""
    try:
        async for chunk in upstream.chunks():
            if meter.first_token_at is None:
                meter.first_token_at = time.perf_counter()
            yield chunk
        await finish(meter, Outcome(UsageStatus.OK, 200, usage, estimated=True))
    except UpstreamFailure as failure:
        cut = Outcome(UsageStatus.UPSTREAM_ERROR, 200, usage, True, error=failure.message)
        await finish(meter, cut)
        # Binary has no in-band error: abort the connection so the client sees a cut.
        raise
    finally:
        await upstream.aclose()
        if not meter.recorded:
            left = Outcome(UsageStatus.CLIENT_DISCONNECTED, 200, usage, estimated=True)
            await finish(meter, left)


class HeldMediaStream:
    """An upstream media stream that gives its account's slot back once it is closed."""

    def __init__(self, stream: MediaStream, lease: Lease) -> None:
        self.content_type = stream.content_type
        self._stream = stream
        self._lease = lease

    def chunks(self) -> AsyncIterator[bytes]:
        return self._stream.chunks()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._lease.release()
