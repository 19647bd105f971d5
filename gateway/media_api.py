"""The media part of `/v1`: images, speech, image files and (through `video_api`) videos."""

from __future__ import annotations

import asyncio
from typing import Literal

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Router
from pydantic import Field, field_validator

from accounts.keys import KeyFacts
from gateway.errors import OpenAIError
from gateway.media_relay import generate_images, synthesize_speech
from gateway.media_store import read_image
from gateway.schemas import Lenient
from gateway.video_api import video_router

media_router = Router(tags=["media"])
media_router.add_router("", video_router)

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class ImageRequest(Lenient):
    prompt: str = Field(min_length=1, max_length=32_000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    quality: str | None = Field(default=None, max_length=20)
    response_format: Literal["b64_json", "url"] | None = None
    user: str | None = None


class VoiceId(Lenient):
    id: str = Field(min_length=1, max_length=100)


class SpeechRequest(Lenient):
    model: str = Field(min_length=1, max_length=200)
    input: str = Field(max_length=4096)
    voice: str | VoiceId
    response_format: SpeechFormat | None = None
    speed: float | None = None  # accepted and ignored: Puter has no such knob

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be empty")
        return value

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


@media_router.post("/images/generations", summary="Generate images from a prompt")
async def create_images(request: HttpRequest, payload: ImageRequest) -> HttpResponseBase:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    return await generate_images(
        request,
        key,
        prompt=payload.prompt,
        model=payload.model,
        n=payload.n or 1,
        size=payload.size,
        quality=payload.quality,
        response_format=payload.response_format or "b64_json",
    )


@media_router.post("/audio/speech", summary="Turn text into speech, streamed")
async def create_speech(request: HttpRequest, payload: SpeechRequest) -> HttpResponseBase:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    return await synthesize_speech(
        request,
        key,
        text=payload.input,
        model=payload.model,
        voice=payload.voice_name,
        response_format=payload.response_format or "mp3",
    )


# The name is the capability: whoever holds an image URL may fetch it until it expires.
# Handed out, not called as an API: kept out of the OpenAPI document.
@media_router.get("/files/media/{name}", auth=None, include_in_schema=False)
async def get_media_file(request: HttpRequest, name: str) -> HttpResponse:
    found = await asyncio.to_thread(read_image, name)
    if found is None:
        raise OpenAIError(404, "This image URL has expired or never existed.", code="not_found")
    content, content_type = found
    response = HttpResponse(content, content_type=content_type)
    response["Cache-Control"] = "private, no-transform"
    response["X-Content-Type-Options"] = "nosniff"
    return response
