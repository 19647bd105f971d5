"""Puter's media drivers (PUTER.md part A; B 4 to B 6): images, speech and video.

Chat lives in `puter.py`; media shares its wire rules: the token as Bearer and in the body,
replies read by their Content-Type, errors classified by `puter_wire.classify`, and one retry
with the v1 driver name when Puter does not know the v2 one, remembered per upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings

from gateway.providers.base import (
    FailureKind,
    Media,
    MediaStream,
    UnusableResult,
    UpstreamFailure,
    UpstreamTarget,
    VideoRequest,
)
from gateway.providers.json_replies import read_json
from gateway.providers.media_replies import (
    BinaryStream,
    WholeStream,
    checked_type,
    is_json,
    media_ref,
    read_media,
)
from gateway.providers.puter import _retry_after, drivers_call_url, puter_base, puter_headers
from gateway.providers.puter_wire import (
    classify,
    envelope_result,
    error_details,
    is_driver_style_error,
    model_base,
)

DEFAULT_IMAGE_MODEL = "gpt-image-1-mini"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_AUDIO_BYTES = 20 * 1024 * 1024
MAX_VIDEO_BYTES = 512 * 1024 * 1024
OPENAI_SPEECH_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx"}
    | {"sage", "shimmer", "verse"}
)


@dataclass(frozen=True, slots=True)
class Driver:
    """A driver call: its interface and method, its v2 driver name and its v1 one."""

    interface: str
    method: str
    name: str
    legacy: str


IMAGE = Driver("puter-image-generation", "generate", "ai-image", "openai-image-generation")
VIDEO = Driver("puter-video-generation", "generate", "ai-video", "openai-video-generation")


def speech_driver(voice: str) -> Driver:
    legacy = "openai-tts" if voice.lower() in OPENAI_VOICES else "aws-polly"
    return Driver("puter-tts", "synthesize", "ai-tts", legacy)


# --- arguments -------------------------------------------------------------------------


def image_args(*, prompt: str, model: str, size: str | None, quality: str | None) -> dict[str, Any]:
    """`args` of an image call: OpenAI's `size` "WxH" becomes `width` and `height`."""
    args: dict[str, Any] = {"prompt": prompt, "model": model}
    if quality:
        args["quality"] = quality
    width, _, height = (size or "").partition("x")
    if width.isdigit() and height.isdigit():
        args["width"], args["height"] = int(width), int(height)
    return args


def speech_args(*, text: str, model: str, voice: str, response_format: str) -> dict[str, Any]:
    """`args` of a speech call: OpenAI's own models go to Puter's `openai` provider."""
    args: dict[str, Any] = {"text": text, "voice": voice, "response_format": response_format}
    if model.lower() in OPENAI_SPEECH_MODELS:
        args["provider"] = "openai"
    args["model"] = model
    return args


def video_args(request: VideoRequest) -> dict[str, Any]:
    args: dict[str, Any] = {
        "prompt": request.prompt,
        "model": request.model,
        "seconds": request.seconds,
        "size": request.size,
    }
    if request.input_reference:
        args["input_reference"] = request.input_reference
    return args


def _video_timeout() -> httpx.Timeout:
    # Puter answers a video call only when the video is done: minutes.
    connect = settings.UPSTREAM_CONNECT_TIMEOUT
    return httpx.Timeout(
        connect=connect, read=settings.UPSTREAM_VIDEO_TIMEOUT, write=connect, pool=connect
    )


# --- the provider ----------------------------------------------------------------------


class PuterMedia:
    def __init__(self) -> None:
        # Per upstream: does it want legacy (v1) driver names? Learnt from its replies.
        self._legacy: dict[int, bool] = {}

    async def generate_image(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        *,
        prompt: str,
        model: str,
        size: str | None,
        quality: str | None,
    ) -> Media:
        args = image_args(prompt=prompt, model=model, size=size, quality=quality)
        reply = await self._call(client, target, IMAGE, args)
        return await read_media(client, reply, kind="image", limit=MAX_IMAGE_BYTES)

    async def synthesize_speech(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        *,
        text: str,
        model: str,
        voice: str,
        response_format: str,
    ) -> MediaStream:
        args = speech_args(text=text, model=model, voice=voice, response_format=response_format)
        reply = await self._call(client, target, speech_driver(voice), args, stream=True)
        if isinstance(reply, httpx.Response):
            stream = BinaryStream(reply, checked_type(reply, "audio"))
            await stream.start()
            return stream
        media = await read_media(client, reply, kind="audio", limit=MAX_AUDIO_BYTES)
        return WholeStream(media)

    async def generate_video(
        self, client: httpx.AsyncClient, target: UpstreamTarget, request: VideoRequest
    ) -> Media:
        reply = await self._call(client, target, VIDEO, video_args(request), slow=True)
        missing = (
            not isinstance(reply, httpx.Response) and media_ref(envelope_result(reply)) is None
        )
        if missing and model_base(request.model).startswith("sora-"):
            # Puter v2 bills Sora, then serialises a stream object instead of the video.
            raise UnusableResult(
                "Puter accepted and billed the Sora call but returned no video (a known "
                "Puter fault); the job is not retried on another upstream."
            )
        return await read_media(client, reply, kind="video", limit=MAX_VIDEO_BYTES)

    async def video_models(self, client: httpx.AsyncClient, target: UpstreamTarget) -> list[str]:
        url = puter_base(target) + "/puterai/video/models"
        try:
            response = await client.get(url, headers=puter_headers("", stream=False))
            models = response.json().get("models") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            models = None
        if not isinstance(models, list):
            raise UpstreamFailure(
                FailureKind.SERVER, "the upstream video model list is unavailable"
            )
        names = [m.get("id") if isinstance(m, dict) else m for m in models]
        return [name for name in names if isinstance(name, str) and name]

    async def _call(
        self,
        client: httpx.AsyncClient,
        target: UpstreamTarget,
        driver: Driver,
        args: dict[str, Any],
        *,
        stream: bool = False,
        slow: bool = False,
    ) -> httpx.Response | Any:
        """An open binary reply, or a parsed JSON success body (PUTER.md B 1)."""
        legacy = self._legacy.get(target.id, False)
        for attempt in (1, 2):
            name = driver.legacy if legacy else driver.name
            response = await _send(client, target, driver, name, args, stream, slow)
            if response.is_success and not is_json(response):
                self._legacy[target.id] = legacy
                return response
            body = await read_json(response)
            details = error_details(response.status_code, body)
            if details is None:
                self._legacy[target.id] = legacy
                return body
            status, code, message = details
            if attempt == 1 and _is_driver_style_error(status, code, message):
                legacy = not legacy  # the other generation's driver naming, once
                continue
            failure = classify(status, code, message, _retry_after(response))
            failure.hide(target.token)  # some upstreams quote the credential they were sent
            raise failure
        raise AssertionError("unreachable")


def _is_driver_style_error(status: int, code: str | None, message: str) -> bool:
    # v1 refuses each v2 driver name as "Calling ai-image directly is not yet supported".
    calling_directly = message.startswith("Calling ") and " directly" in message
    return is_driver_style_error(status, code, message) or calling_directly


async def _send(
    client: httpx.AsyncClient,
    target: UpstreamTarget,
    driver: Driver,
    name: str,
    args: dict[str, Any],
    stream: bool,
    slow: bool,
) -> httpx.Response:
    body = {
        "interface": driver.interface,
        "driver": name,
        "method": driver.method,
        "args": args,
        "auth_token": target.token,
        "test_mode": False,
    }
    request = client.build_request(
        "POST",
        drivers_call_url(target),
        content=orjson.dumps(body),
        headers=puter_headers(target.token, stream=stream),
        timeout=_video_timeout() if slow else httpx.USE_CLIENT_DEFAULT,
    )
    try:
        return await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        kind = FailureKind.SERVER if isinstance(exc, httpx.ConnectTimeout) else FailureKind.TIMEOUT
        raise UpstreamFailure(kind, "the upstream did not answer in time", status=504) from None
    except httpx.HTTPError:
        raise UpstreamFailure(
            FailureKind.SERVER, "the upstream could not be reached", status=502
        ) from None
