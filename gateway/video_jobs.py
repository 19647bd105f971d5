"""Video jobs as rows: created, started, finished, and failed once their process is gone.

A job is worked by the process that accepted it, which refreshes `heartbeat_at` while it
holds the job. A queued or running job whose heartbeat stopped belongs to a process that
died or restarted: it is failed, never resumed (see `video_runner`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.utils import timezone

from gateway.models import VideoJob, VideoStatus
from gateway.usage import storable

ACTIVE = (VideoStatus.QUEUED, VideoStatus.IN_PROGRESS)
HEARTBEAT_SECONDS = 15.0
# Four missed heartbeats: long enough for a busy event loop, short for a client polling.
ORPHAN_AFTER = dt.timedelta(seconds=4 * HEARTBEAT_SECONDS)
RESTARTED = "the gateway restarted while the job ran"


def create_job(
    *,
    key_id: int,
    request_id: str,
    model: str,
    prompt: str,
    seconds: int,
    size: str,
    worker: str,
) -> VideoJob:
    now = timezone.now()
    return VideoJob.objects.create(
        id="video_" + secrets.token_hex(16),
        key_id=key_id,
        request_id=request_id,
        model=storable(model, 200),
        prompt=storable(prompt, len(prompt)),
        seconds=str(seconds),
        size=size,
        worker=worker,
        heartbeat_at=now,
        created=now,
    )


def start_job(job_id: str) -> bool:
    now = timezone.now()
    rows = VideoJob.objects.filter(pk=job_id, status=VideoStatus.QUEUED)
    return bool(rows.update(status=VideoStatus.IN_PROGRESS, started=now, heartbeat_at=now))


def complete_job(job_id: str, *, file: str, upstream_id: int) -> bool:
    """Mark the job done; False if it was failed meanwhile (its file is then unused)."""
    rows = VideoJob.objects.filter(pk=job_id, status=VideoStatus.IN_PROGRESS)
    return bool(
        rows.update(
            status=VideoStatus.COMPLETED,
            progress=100,
            file=file,
            upstream_id=upstream_id,
            finished=timezone.now(),
        )
    )


def fail_job(job_id: str, *, code: str, message: str) -> None:
    VideoJob.objects.filter(pk=job_id, status__in=ACTIVE).update(
        status=VideoStatus.FAILED,
        error_code=code,
        error=storable(message, 300),
        finished=timezone.now(),
    )


def tend_jobs(*, worker: str, job_ids: list[str]) -> int:
    """Keep this process's jobs alive, then fail every orphan; return how many failed."""
    now = timezone.now()
    if job_ids:
        VideoJob.objects.filter(pk__in=job_ids, worker=worker, status__in=ACTIVE).update(
            heartbeat_at=now
        )
    return fail_orphans(now=now)


def fail_orphans(*, now: dt.datetime | None = None, job_id: str | None = None) -> int:
    """Fail queued or running jobs whose process stopped beating."""
    now = now or timezone.now()
    rows = VideoJob.objects.filter(status__in=ACTIVE, heartbeat_at__lt=now - ORPHAN_AFTER)
    if job_id is not None:
        rows = rows.filter(pk=job_id)
    return rows.update(
        status=VideoStatus.FAILED, error_code="gateway_restarted", error=RESTARTED, finished=now
    )


def job_of_key(job_id: str, key_id: int) -> VideoJob | None:
    """The key's job, brought up to date if its process is gone; None for anyone else's."""
    fail_orphans(job_id=job_id)
    return VideoJob.objects.filter(pk=job_id, key_id=key_id).first()


def video_object(job: VideoJob) -> dict[str, Any]:
    """The job in OpenAI's `video` shape."""
    failed = job.status == VideoStatus.FAILED
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": job.status,
        "progress": job.progress,
        "created_at": int(job.created.timestamp()),
        "completed_at": int(job.finished.timestamp()) if job.finished else None,
        "expires_at": None,
        "prompt": job.prompt,
        "seconds": job.seconds,
        "size": job.size,
        "remixed_from_video_id": None,
        "error": {"code": job.error_code, "message": job.error} if failed else None,
    }
