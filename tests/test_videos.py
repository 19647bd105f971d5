"""`/v1/videos` jobs through the official SDK, against the fake Puter."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone
from openai.types import Video

from accounts.models import ApiKey, Endpoint, UsageLog, UsageStatus
from gateway.models import Upstream, VideoJob, VideoStatus
from gateway.testing.fake_media import png_for, video_for
from gateway.video_jobs import RESTARTED
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The SDK marks its video methods deprecated; they are what clients call.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

VEO = "veo-3.1-fast-generate-preview"


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def video_calls(fake: Fake) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in fake.stats()["requests"]
        if r["path"] == "/drivers/call" and r["body"]["interface"] == "puter-video-generation"
    ]


def wait_until_done(sdk: openai.OpenAI, video_id: str, timeout: float = 10) -> Video:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = sdk.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} did not finish")


def test_create_poll_and_download_give_the_fakes_video(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    sdk = client(gateway, alice_key)
    created = sdk.videos.create(prompt="waves at dusk", model=VEO, seconds="8", size="1280x720")
    assert created.object == "video"
    assert created.id.startswith("video_")
    assert (created.model, created.prompt) == (VEO, "waves at dusk")
    assert (created.seconds, created.size) == ("8", "1280x720")
    assert created.status in ("queued", "in_progress", "completed")
    assert created.error is None
    done = wait_until_done(sdk, created.id)
    assert (done.status, done.progress, done.error) == ("completed", 100, None)
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    content = sdk.videos.with_raw_response.download_content(created.id)
    assert content.headers["content-type"] == "video/mp4"
    assert content.content == video_for("waves at dusk")
    [sent] = video_calls(fake)
    assert sent["driver"] == "ai-video"
    assert sent["args"] == {
        "prompt": "waves at dusk",
        "model": VEO,
        "seconds": 8,
        "size": "1280x720",
    }
    row = UsageLog.objects.get()
    assert (row.endpoint, row.status, row.http_status) == (Endpoint.VIDEOS, UsageStatus.OK, 200)
    assert (row.model, row.total_tokens) == (VEO, 0)
    job = VideoJob.objects.get()
    assert (job.request_id, job.upstream) == (row.request_id, upstream)


def test_model_defaults_to_the_first_listed_model_that_is_not_sora(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    sdk = client(gateway, alice_key)
    created = sdk.videos.create(prompt="a lighthouse")
    assert (created.model, created.seconds, created.size) == (VEO, "4", "720x1280")
    assert wait_until_done(sdk, created.id).status == "completed"
    assert video_calls(fake)[0]["args"]["model"] == VEO


def test_json_body_and_a_reference_file_are_accepted(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    body = {"prompt": "json waves +data", "model": VEO, "seconds": 12}
    reply = httpx.post(gateway.v1 + "/videos", json=body, headers=headers)
    assert reply.status_code == 200
    sdk = client(gateway, alice_key)
    assert wait_until_done(sdk, reply.json()["id"]).status == "completed"
    assert sdk.videos.download_content(reply.json()["id"]).content == video_for("json waves +data")
    reference = ("ref.png", png_for("ref"), "image/png")
    created = sdk.videos.create(prompt="from a frame +object", model=VEO, input_reference=reference)
    assert wait_until_done(sdk, created.id).status == "completed"
    assert sdk.videos.download_content(created.id).content == video_for("from a frame +object")
    sent = [call["args"] for call in video_calls(fake)]
    assert sent[0]["seconds"] == 12
    assert sent[1]["input_reference"].startswith("data:image/png;base64,")
    assert UsageLog.objects.filter(endpoint=Endpoint.VIDEOS, status=UsageStatus.OK).count() == 2


def test_another_key_sees_a_404(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str], upstream: Upstream
) -> None:
    alice, bob = make_key("alice"), make_key("bob")
    created = client(gateway, alice).videos.create(prompt="private", model=VEO)
    wait_until_done(client(gateway, alice), created.id)
    for call in (
        client(gateway, bob).videos.retrieve,
        client(gateway, bob).videos.download_content,
    ):
        with pytest.raises(openai.NotFoundError) as raised:
            call(created.id)
        assert raised.value.body == {
            "message": f"No video with id '{created.id}' was found.",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }


def test_content_of_an_unfinished_job_is_refused(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    sdk = client(gateway, alice_key)
    created = sdk.videos.create(prompt="slow +delay1500", model=VEO)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.videos.download_content(created.id)
    assert raised.value.code == "video_not_ready"
    raw = sdk.videos.with_raw_response.retrieve(created.id)
    assert raw.parse().status == "in_progress"
    assert raw.headers["openai-poll-after-ms"] == "2000"
    assert wait_until_done(sdk, created.id).status == "completed"


def test_sora_reply_without_video_fails_the_job_and_is_not_retried(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-a", token="ok-a")
    make_upstream("puter-b", token="ok-b")
    sdk = client(gateway, alice_key)
    created = sdk.videos.create(prompt="sora waves", model="sora-2")
    done = wait_until_done(sdk, created.id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.code == "upstream_error"
    assert done.error.message.startswith("Puter accepted and billed the Sora call")
    assert len(video_calls(fake)) == 1
    assert UsageLog.objects.get().status == UsageStatus.OK


def test_failing_upstream_fails_the_job_with_the_openai_error(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-crash", token="crash-token")
    sdk = client(gateway, alice_key)
    done = wait_until_done(sdk, sdk.videos.create(prompt="doomed", model=VEO).id)
    assert done.status == "failed"
    assert done.error is not None
    assert (done.error.code, done.error.message) == (
        "upstream_error",
        "The upstream failed: Internal Server Error",
    )
    assert Upstream.objects.get().consecutive_failures == 1


def test_v1_upstream_sends_raw_mp4(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-v1", token="v1-old-wire-token")
    sdk = client(gateway, alice_key)
    created = sdk.videos.create(prompt="old waves", model="sora-2")
    assert wait_until_done(sdk, created.id).status == "completed"
    assert sdk.videos.download_content(created.id).content == video_for("old waves")
    drivers = [call["driver"] for call in video_calls(fake)]
    assert drivers == ["ai-video", "openai-video-generation"]


def test_refused_bodies_are_400s_with_invalid_request_rows(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"json": {"model": VEO}}, "prompt"),
        ({"data": {"prompt": "x", "seconds": "eight", "model": VEO}}, "seconds"),
        ({"json": {"prompt": "x", "size": "wide"}}, "size"),
        ({"json": {"prompt": "x", "input_reference": "ftp://x"}}, "input_reference"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, None),
    ]
    for request, param in cases:
        extra = request.pop("headers", {})
        reply = httpx.post(gateway.v1 + "/videos", headers={**headers, **extra}, **request)
        assert reply.status_code == 400
        assert (reply.json()["error"]["type"], reply.json()["error"]["param"]) == (
            "invalid_request_error",
            param,
        )
    rows = list(UsageLog.objects.order_by("created"))
    assert [(r.endpoint, r.status) for r in rows] == [
        (Endpoint.VIDEOS, UsageStatus.INVALID_REQUEST)
    ] * 5
    assert rows[0].model == VEO
    assert VideoJob.objects.count() == 0


def _stale_job(key: ApiKey, status: str) -> VideoJob:
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    return VideoJob.objects.create(
        id=f"video_stale_{status}",
        key=key,
        request_id="req_old",
        model=VEO,
        prompt="before the restart",
        seconds="4",
        size="720x1280",
        status=status,
        worker="gone:1:dead",
        heartbeat_at=long_ago,
        created=long_ago,
    )


def test_jobs_of_a_dead_process_fail_when_a_new_gateway_starts(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    key = ApiKey.objects.get()
    running = _stale_job(key, VideoStatus.IN_PROGRESS)
    queued = _stale_job(key, VideoStatus.QUEUED)
    fresh = start_gateway(fake.url, "video-restart")
    try:
        sdk = client(fresh, alice_key)
        # The first create starts this process's runner, which fails the orphans first.
        created = sdk.videos.create(prompt="after the restart", model=VEO)
        for job in (running, queued):
            job.refresh_from_db()
            assert (job.status, job.error_code, job.error) == (
                VideoStatus.FAILED,
                "gateway_restarted",
                RESTARTED,
            )
            assert job.finished is not None
        seen = sdk.videos.retrieve(running.id)
        assert seen.status == "failed"
        assert seen.error is not None
        assert (seen.error.code, seen.error.message) == ("gateway_restarted", RESTARTED)
        assert wait_until_done(sdk, created.id).status == "completed"
    finally:
        fresh.process.terminate()
        fresh.process.wait(10)


def test_reading_an_orphaned_job_fails_it(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    job = _stale_job(ApiKey.objects.get(), VideoStatus.IN_PROGRESS)
    seen = client(gateway, alice_key).videos.retrieve(job.id)
    assert seen.status == "failed"
    assert seen.error is not None
    assert seen.error.message == RESTARTED


def test_creation_counts_toward_rpm_and_polling_does_not(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str], upstream: Upstream
) -> None:
    key = make_key("carol", rpm=5)
    sdk = client(gateway, key)
    raw = sdk.videos.with_raw_response.create(prompt="counted", model=VEO)
    assert raw.headers["x-ratelimit-limit-requests"] == "5"
    assert raw.headers["x-ratelimit-remaining-requests"] == "4"
    created = raw.parse()
    for _ in range(3):
        sdk.videos.retrieve(created.id)
    wait_until_done(sdk, created.id)
    report = httpx.get(gateway.v1 + "/key", headers={"Authorization": f"Bearer {key}"}).json()
    assert report["remaining"]["requests_this_minute"] == 4
    assert report["usage"]["requests"] == 1
