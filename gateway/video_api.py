"""`/v1/videos`: OpenAI's asynchronous video jobs, created from multipart forms or JSON."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pydantic
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from ninja import Router
from pydantic import Field

from accounts.keys import KeyFacts
from accounts.models import Endpoint
from gateway.errors import OpenAIError, invalid_request
from gateway.relay import record_invalid
from gateway.schemas import Lenient
from gateway.videos import VideoFields, create_video, retrieve_video, video_content

video_router = Router(tags=["videos"])
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class VideoCreate(Lenient):
    prompt: str = Field(min_length=1, max_length=32_000)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    # The official SDK sends seconds as a string ("8"); a number is accepted too.
    seconds: int = Field(default=4, ge=1, le=60)
    size: str = Field(default="720x1280", pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")


def _create_body() -> dict[str, Any]:
    """The create body for the OpenAPI document: parsed by hand, as JSON or a form."""
    fields = VideoCreate.model_json_schema()
    as_json = {
        **fields,
        "properties": {**fields["properties"], "input_reference": {"type": "string"}},
    }
    reference = {"type": "string", "format": "binary"}
    as_form = {**fields, "properties": {**fields["properties"], "input_reference": reference}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": as_json},
                "multipart/form-data": {"schema": as_form},
            },
        }
    }


@video_router.post("/videos", summary="Create a video job", openapi_extra=_create_body())
async def create_video_job(request: HttpRequest) -> HttpResponse:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    data: dict[str, Any] = {}
    try:
        data, reference = await _read_create_body(request)
        fields = _video_fields(data, reference)
    except OpenAIError as error:
        model = data.get("model")
        await record_invalid(
            request, key, Endpoint.VIDEOS, model if isinstance(model, str) else "", error
        )
        raise
    return await create_video(request, key, fields)


@video_router.get("/videos/{video_id}", summary="Retrieve a video job")
async def get_video_job(request: HttpRequest, video_id: str) -> HttpResponse:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    return await retrieve_video(key, video_id)


@video_router.get("/videos/{video_id}/content", summary="Download a finished video")
async def get_video_content(
    request: HttpRequest, video_id: str, variant: str | None = None
) -> HttpResponseBase:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    return await video_content(key, video_id, variant)


async def _read_create_body(request: HttpRequest) -> tuple[dict[str, Any], object]:
    """The fields and the `input_reference` of a multipart, form or JSON body."""
    if request.content_type in FORM_TYPES:
        # Parsing may spool an upload to disk: off the event loop.
        return await asyncio.to_thread(_form_fields, request)
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise invalid_request("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    return data, data.get("input_reference")


def _form_fields(request: HttpRequest) -> tuple[dict[str, Any], object]:
    data: dict[str, Any] = {name: request.POST.get(name) for name in request.POST}
    upload = request.FILES.get("input_reference")
    if isinstance(upload, UploadedFile):
        content_type = upload.content_type or "application/octet-stream"
        encoded = base64.b64encode(upload.read()).decode()
        return data, f"data:{content_type};base64,{encoded}"
    return data, data.get("input_reference")


def _video_fields(data: dict[str, Any], reference: object) -> VideoFields:
    try:
        parsed = VideoCreate.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise invalid_request(f"{first['msg']} (at '{param}').", param=param) from None
    return VideoFields(
        prompt=parsed.prompt,
        model=parsed.model,
        seconds=parsed.seconds,
        size=parsed.size,
        input_reference=_reference(reference),
    )


def _reference(reference: object) -> str | None:
    """`input_reference` as Puter takes it: a data URI or a URL."""
    if isinstance(reference, dict):
        reference = reference.get("image_url") or reference.get("url")
    if reference is None or reference == "":
        return None
    if isinstance(reference, str) and reference.startswith(("data:", "https://", "http://")):
        return reference
    raise invalid_request(
        "input_reference must be a file, a data: URI or an http(s) URL.", param="input_reference"
    )
