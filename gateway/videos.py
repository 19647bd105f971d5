"""OpenAI's video jobs over Puter: create (one usage row, at acceptance), read, download.

The row of a create call is written when the job is accepted, not when it ends: the call is
what the key is charged for (rpm, and Puter reports no tokens for video), and a row written
at the end could be lost with its process. How the job went is the job's own status.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts
from accounts.models import Endpoint, UsageStatus
from gateway.errors import OpenAIError, invalid_request, upstream_unavailable
from gateway.media_relay import admit_media, granted_headers, json_response, metered
from gateway.media_store import file_chunks, stored_size
from gateway.models import VideoStatus
from gateway.pool import pool_entries
from gateway.providers.base import UpstreamFailure, VideoRequest
from gateway.providers.media_registry import media_provider_for, media_targets
from gateway.providers.puter_wire import model_base
from gateway.relay import finish, new_meter
from gateway.sse import ClosingStreamResponse
from gateway.upstream_client import upstream_client
from gateway.usage import Outcome, no_usage
from gateway.video_jobs import ACTIVE, create_job, job_of_key, video_object
from gateway.video_runner import VideoWork, video_runner

POLL_AFTER_MS = "2000"
_default_model: tuple[str, float] | None = None


@dataclass(frozen=True, slots=True)
class VideoFields:
    """A create request as the client sent it (`model` None: the default)."""

    prompt: str
    model: str | None
    seconds: int
    size: str
    input_reference: str | None


async def create_video(request: HttpRequest, key: KeyFacts, fields: VideoFields) -> HttpResponse:
    meter = new_meter(request, key, Endpoint.VIDEOS, {"model": fields.model or ""})
    async with metered(meter):
        meter.model = fields.model or await default_video_model()
        routes = await admit_media(request, key, meter)
        if not any(route.targets for route in routes):
            raise upstream_unavailable()
        runner = await video_runner()
        job = await run_in_db_thread(
            create_job,
            key_id=key.id,
            request_id=meter.request_id,
            model=meter.model,
            prompt=fields.prompt,
            seconds=fields.seconds,
            size=fields.size,
            worker=runner.worker,
        )
        video = VideoRequest(
            fields.prompt, meter.model, fields.seconds, fields.size, fields.input_reference
        )
        runner.submit(VideoWork(job.id, key, meter.request_id, video))
    await finish(meter, Outcome(UsageStatus.OK, 200, no_usage()))
    return json_response(video_object(job), granted_headers(meter))


async def default_video_model() -> str:
    """VIDEO_DEFAULT_MODEL, else the upstream's first video model that is not Sora."""
    global _default_model
    if settings.VIDEO_DEFAULT_MODEL:
        return str(settings.VIDEO_DEFAULT_MODEL)
    if _default_model and time.monotonic() - _default_model[1] < settings.MODELS_CACHE_SECONDS:
        return _default_model[0]
    # Puter bills Sora and returns no video (PUTER.md B 14): never pick it unasked.
    for target in media_targets([entry.target for entry in await pool_entries()]):
        try:
            names = await media_provider_for(target).video_models(upstream_client(), target)
        except UpstreamFailure:
            continue
        chosen = next((name for name in names if not model_base(name).startswith("sora")), None)
        if chosen is not None:
            _default_model = (chosen, time.monotonic())
            return chosen
    raise OpenAIError(
        503,
        "No default video model is available right now; name one in 'model'.",
        type="api_error",
        code="upstream_unavailable",
    )


def video_not_found(video_id: str) -> OpenAIError:
    return OpenAIError(404, f"No video with id '{video_id}' was found.", code="not_found")


async def retrieve_video(key: KeyFacts, video_id: str) -> HttpResponse:
    job = await run_in_db_thread(job_of_key, video_id, key.id)
    if job is None:
        raise video_not_found(video_id)
    response = json_response(video_object(job))
    if job.status in ACTIVE:
        # The SDK's `poll` helper waits this long between reads.
        response["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


async def video_content(key: KeyFacts, video_id: str, variant: str | None) -> HttpResponseBase:
    """The stored MP4, streamed from disk."""
    job = await run_in_db_thread(job_of_key, video_id, key.id)
    if job is None:
        raise video_not_found(video_id)
    if variant not in (None, "video"):
        raise invalid_request("Only the 'video' variant is available.", param="variant")
    if job.status != VideoStatus.COMPLETED:
        message = f"The video is not ready: its status is '{job.status}'."
        raise OpenAIError(400, message, code="video_not_ready")
    size = await asyncio.to_thread(stored_size, job.file)
    if size is None:
        raise OpenAIError(404, "The video file is no longer stored.", code="not_found")
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{job.id}.mp4"',
    }
    return ClosingStreamResponse(file_chunks(job.file), content_type="video/mp4", headers=headers)
