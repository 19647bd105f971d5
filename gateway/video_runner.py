"""The in-process video runner: this process's jobs, a few at a time, kept alive by heartbeats.

Puter answers a video call only when the video is done, minutes later, so each job is one
long upstream call made by the process that accepted it. A job is never resumed elsewhere:
when its process dies its heartbeat stops and the job is failed (when a runner starts, on
every runner's periodic sweep, and when someone reads the job). Resuming would call, and pay,
Puter a second time behind the client's back; a failed job tells the client to decide.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass, replace

from django.conf import settings

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts
from accounts.models import Endpoint
from gateway.admission import Route
from gateway.aliases import models_to_try
from gateway.errors import OpenAIError
from gateway.media_store import store_video
from gateway.pool import candidates
from gateway.providers.base import Media, UnusableResult, UpstreamTarget, VideoRequest
from gateway.providers.media_registry import media_provider_for, media_targets
from gateway.relay import failover_routes
from gateway.upstream_client import upstream_client
from gateway.usage import UsageMeter
from gateway.video_jobs import HEARTBEAT_SECONDS, complete_job, fail_job, start_job, tend_jobs

logger = logging.getLogger("gateway.videos")


@dataclass(frozen=True, slots=True)
class VideoWork:
    """A job as the runner needs it; the input reference lives only here, in memory."""

    job_id: str
    key: KeyFacts
    request_id: str
    request: VideoRequest


class VideoRunner:
    def __init__(self) -> None:
        self.worker = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._slots = asyncio.Semaphore(settings.VIDEO_JOBS_PER_PROCESS)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._tending: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fail the jobs of processes that are gone, then keep this process's jobs alive."""
        self._tending = asyncio.create_task(self._tend())
        try:
            await run_in_db_thread(tend_jobs, worker=self.worker, job_ids=[])
        except Exception:
            logger.exception("video jobs could not be tended")

    def submit(self, work: VideoWork) -> None:
        task = asyncio.create_task(self._run(work))
        self._active[work.job_id] = task
        task.add_done_callback(lambda _task: self._active.pop(work.job_id, None))

    async def _tend(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await run_in_db_thread(tend_jobs, worker=self.worker, job_ids=list(self._active))
            except Exception:
                logger.exception("video jobs could not be tended")

    async def _run(self, work: VideoWork) -> None:
        async with self._slots:
            try:
                await self._work(work)
            except Exception:
                logger.exception("video job failed unexpectedly", extra={"job": work.job_id})
                reason = "the gateway failed while working the job"
                try:
                    await run_in_db_thread(fail_job, work.job_id, code="api_error", message=reason)
                except Exception:
                    logger.exception("video job could not be failed", extra={"job": work.job_id})

    async def _work(self, work: VideoWork) -> None:
        # A cancel (shutdown) ends the job here; its stopped heartbeat then fails it.
        if not await run_in_db_thread(start_job, work.job_id):
            return  # failed meanwhile
        try:
            media, upstream_id = await generate_video(work)
        except OpenAIError as error:
            code = error.code or error.type
            await run_in_db_thread(fail_job, work.job_id, code=code, message=error.message)
            return
        except UnusableResult as exc:
            await run_in_db_thread(fail_job, work.job_id, code="upstream_error", message=str(exc))
            return
        path = await asyncio.to_thread(store_video, work.job_id, media.content)
        await run_in_db_thread(complete_job, work.job_id, file=path, upstream_id=upstream_id)
        logger.info("video job completed", extra={"job": work.job_id, "bytes": len(media.content)})


async def generate_video(work: VideoWork) -> tuple[Media, int]:
    """One Puter video call, failing over between upstreams; the media and who made it."""
    # The job's row was written when it was accepted: a recorded meter keeps it the only one.
    meter = UsageMeter(
        request_id=work.request_id,
        key_id=work.key.id,
        user_id=work.key.user_id,
        key_prefix=work.key.prefix,
        endpoint=Endpoint.VIDEOS,
        model=work.request.model,
        stream=False,
        recorded=True,
    )
    names = await models_to_try(work.request.model)
    routes = [Route(name, media_targets(await candidates(name))) for name in names]
    client = upstream_client()

    async def call(target: UpstreamTarget, served: str) -> tuple[Media, int]:
        provider = media_provider_for(target)
        media = await provider.generate_video(client, target, replace(work.request, model=served))
        return media, target.id

    return await failover_routes(meter, routes, call)


_runners: dict[asyncio.AbstractEventLoop, VideoRunner] = {}


async def video_runner() -> VideoRunner:
    """This process's runner, started on first use."""
    loop = asyncio.get_running_loop()
    runner = _runners.get(loop)
    if runner is None:
        runner = _runners[loop] = VideoRunner()
        await runner.start()
    return runner
