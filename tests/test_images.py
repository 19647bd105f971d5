"""`POST /v1/images/generations` through the official SDK, against the fake Puter."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings

from accounts.models import Endpoint, UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.testing.fake_media import png_for
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "a red fox in the snow"


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def image_calls(fake: Fake) -> list[dict[str, object]]:
    return [
        r["body"]
        for r in fake.stats()["requests"]
        if r["path"] == "/drivers/call" and r["body"]["interface"] == "puter-image-generation"
    ]


def test_b64_json_carries_the_fakes_png_and_leaves_one_ok_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    raw = client(gateway, alice_key).images.with_raw_response.generate(
        model="gpt-image-1-mini", prompt=PROMPT, size="1024x1536", quality="low"
    )
    reply = raw.parse()
    assert reply.data is not None
    assert len(reply.data) == 1
    assert reply.data[0].b64_json is not None
    assert base64.b64decode(reply.data[0].b64_json) == png_for(PROMPT)
    assert reply.data[0].url is None
    assert abs(reply.created - time.time()) < 60
    [sent] = image_calls(fake)
    assert sent["driver"] == "ai-image"
    assert sent["args"] == {
        "prompt": PROMPT,
        "model": "gpt-image-1-mini",
        "quality": "low",
        "width": 1024,
        "height": 1536,
    }
    row = UsageLog.objects.get()
    assert row.request_id == raw.headers["x-request-id"]
    assert (row.endpoint, row.status, row.http_status) == (Endpoint.IMAGES, UsageStatus.OK, 200)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (0, 0, 0)
    assert row.usage_estimated is False
    assert (row.model, row.upstream_model) == ("gpt-image-1-mini", "gpt-image-1-mini")
    assert row.upstream is not None
    assert row.upstream.label == "puter-main"


def test_model_defaults_to_gpt_image_1_mini(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = client(gateway, alice_key).images.generate(prompt=PROMPT)
    assert reply.data is not None
    assert base64.b64decode(reply.data[0].b64_json or "") == png_for(PROMPT)
    assert image_calls(fake)[0]["args"] == {"prompt": PROMPT, "model": "gpt-image-1-mini"}
    assert UsageLog.objects.get().model == "gpt-image-1-mini"


def test_url_serves_exactly_the_fakes_png_without_a_key(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = client(gateway, alice_key).images.generate(prompt=PROMPT, response_format="url")
    assert reply.data is not None
    url = reply.data[0].url
    assert url is not None
    assert url.startswith(gateway.v1 + "/files/media/")
    assert reply.data[0].b64_json is None
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert fetched.content == png_for(PROMPT)
    # 43 URL-safe characters of token: unguessable.
    assert len(url.rsplit("/", 1)[1]) == len("x" * 43 + ".png")
    assert UsageLog.objects.get().status == UsageStatus.OK


def test_url_is_a_404_after_it_expires_and_its_file_is_gone(
    fake: Fake, alice_key: str, upstream: Upstream, django_db_blocker: object
) -> None:
    short = start_gateway(fake.url, "media-ttl", MEDIA_URL_TTL="1")
    try:
        reply = client(short, alice_key).images.generate(prompt=PROMPT, response_format="url")
        assert reply.data is not None
        url = reply.data[0].url or ""
        assert httpx.get(url).content == png_for(PROMPT)
        stored = Path(settings.VAR_DIR) / "media" / url.rsplit("/", 1)[1]
        assert stored.exists()
        time.sleep(1.2)
        expired = httpx.get(url)
        assert expired.status_code == 404
        assert expired.json() == {
            "error": {
                "message": "This image URL has expired or never existed.",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }
        assert not stored.exists()
    finally:
        short.process.terminate()
        short.process.wait(10)


def test_unknown_media_name_is_an_openai_404(gateway: Gateway) -> None:
    for name in ("nothing.png", "../db.sqlite3", "x" * 43 + ".png"):
        reply = httpx.get(gateway.v1 + "/files/media/" + name)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"


def test_n_2_makes_two_calls_and_one_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = client(gateway, alice_key).images.generate(prompt=PROMPT, n=2)
    assert reply.data is not None
    assert [base64.b64decode(d.b64_json or "") for d in reply.data] == [png_for(PROMPT)] * 2
    assert len(image_calls(fake)) == 2
    assert UsageLog.objects.count() == 1


def test_url_and_object_results_are_fetched_from_the_upstream(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    sdk = client(gateway, alice_key)
    for prompt in ("fox +url", "fox +object"):
        reply = sdk.images.generate(prompt=prompt)
        assert reply.data is not None
        assert base64.b64decode(reply.data[0].b64_json or "") == png_for(prompt)
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 2


def test_v1_upstream_answers_raw_bytes_after_one_driver_retry(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-v1", token="v1-old-wire-token")
    sdk = client(gateway, alice_key)
    first = sdk.images.generate(prompt=PROMPT)
    second = sdk.images.generate(prompt="another fox")
    assert first.data is not None
    assert second.data is not None
    assert base64.b64decode(first.data[0].b64_json or "") == png_for(PROMPT)
    assert base64.b64decode(second.data[0].b64_json or "") == png_for("another fox")
    # The refused v2 name is tried once; the legacy style is remembered for the upstream.
    drivers = [call["driver"] for call in image_calls(fake)]
    assert drivers == ["ai-image", "openai-image-generation", "openai-image-generation"]
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 2


def test_failing_upstream_is_an_openai_502_and_an_upstream_error_row(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-crash", token="crash-token")
    with pytest.raises(openai.InternalServerError) as raised:
        client(gateway, alice_key).images.generate(prompt=PROMPT)
    assert raised.value.status_code == 502
    assert raised.value.body == {
        "message": "The upstream failed: Internal Server Error",
        "type": "api_error",
        "param": None,
        "code": "upstream_error",
    }
    row = UsageLog.objects.get()
    assert (row.endpoint, row.status, row.http_status) == (
        Endpoint.IMAGES,
        UsageStatus.UPSTREAM_ERROR,
        502,
    )
    assert Upstream.objects.get().consecutive_failures == 1


def test_a_failing_upstream_is_replaced_by_the_next(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-broke", token="broke-token", priority=1)
    make_upstream("puter-ok", token="ok-token")
    reply = client(gateway, alice_key).images.generate(prompt=PROMPT)
    assert reply.data is not None
    assert base64.b64decode(reply.data[0].b64_json or "") == png_for(PROMPT)
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.OK
    assert row.upstream is not None
    assert row.upstream.label == "puter-ok"
    assert Upstream.objects.get(label="puter-broke").state == "cooling"


def test_refused_body_is_a_400_with_an_invalid_request_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    for body in (
        {"model": "gpt-image-1"},
        {"prompt": "x", "n": 11},
        {"prompt": "x", "size": "big"},
    ):
        reply = httpx.post(gateway.v1 + "/images/generations", json=body, headers=headers)
        assert reply.status_code == 400
        assert reply.json()["error"]["type"] == "invalid_request_error"
    params = [
        httpx.post(gateway.v1 + "/images/generations", json=b, headers=headers).json()["error"]
        for b in ({"model": "m"}, {"prompt": "x", "response_format": "png"})
    ]
    assert [p["param"] for p in params] == ["prompt", "response_format"]
    rows = UsageLog.objects.order_by("created")
    assert [r.status for r in rows] == [UsageStatus.INVALID_REQUEST] * 5
    assert {r.endpoint for r in rows} == {Endpoint.IMAGES}
    assert rows[0].model == "gpt-image-1"
    assert image_calls(fake) == []


def test_images_and_speech_carry_the_keys_rate_limit_headers(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str], upstream: Upstream
) -> None:
    key = make_key("carol", rpm=5)
    sdk = client(gateway, key)
    image = sdk.images.with_raw_response.generate(prompt=PROMPT)
    speech = sdk.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Hi")
    assert image.headers["x-ratelimit-limit-requests"] == "5"
    assert image.headers["x-ratelimit-remaining-requests"] == "4"
    assert speech.headers["x-ratelimit-remaining-requests"] == "3"


def test_url_for_a_host_the_gateway_does_not_serve_is_refused_before_any_call(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}", "Host": "evil.example"}
    body = {"prompt": PROMPT, "response_format": "url"}
    reply = httpx.post(gateway.v1 + "/images/generations", json=body, headers=headers)
    assert reply.status_code == 400
    assert "PUBLIC_BASE_URL" in reply.json()["error"]["message"]
    assert image_calls(fake) == []
    assert UsageLog.objects.get().status == UsageStatus.INVALID_REQUEST
