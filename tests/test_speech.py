"""`POST /v1/audio/speech` through the official SDK and over raw HTTP, against the fake Puter."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from accounts.models import Endpoint, UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.testing.fake_media import SPEECH_CHUNKS, speech_for
from gateway.tokens import count_text
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "The quick brown fox jumps over the lazy dog."


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def tts_calls(fake: Fake) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in fake.stats()["requests"]
        if r["path"] == "/drivers/call" and r["body"]["interface"] == "puter-tts"
    ]


def wait_for_row(timeout: float = 5.0) -> UsageLog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = UsageLog.objects.first()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError("no usage row was written")


def test_sdk_gets_the_fakes_audio_bytes_and_type_with_one_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    raw = client(gateway, alice_key).audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=TEXT
    )
    audio, content_type = speech_for(TEXT)
    assert raw.headers["content-type"] == content_type == "audio/mpeg"
    assert raw.content == audio
    [sent] = tts_calls(fake)
    assert sent["driver"] == "ai-tts"
    assert sent["args"] == {
        "text": TEXT,
        "voice": "alloy",
        "response_format": "mp3",
        "provider": "openai",
        "model": "tts-1",
    }
    row = wait_for_row()
    assert row.request_id == raw.headers["x-request-id"]
    assert (row.endpoint, row.status, row.http_status) == (Endpoint.SPEECH, UsageStatus.OK, 200)
    assert (row.prompt_tokens, row.completion_tokens) == (count_text(TEXT), 0)
    assert row.prompt_tokens == 10
    assert (row.usage_estimated, row.stream) == (True, True)
    assert (row.model, row.upstream_model) == ("tts-1", "tts-1")
    assert row.ttft_ms is not None
    assert row.upstream is not None
    assert row.upstream.label == "puter-main"


def test_wav_comes_back_as_audio_wav(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    raw = client(gateway, alice_key).audio.speech.with_raw_response.create(
        model="gpt-4o-mini-tts", voice={"id": "coral"}, input="Hi", response_format="wav"
    )
    assert raw.headers["content-type"] == "audio/wav"
    assert raw.content == speech_for("Hi", "wav")[0]
    assert tts_calls(fake)[0]["args"]["voice"] == "coral"


def test_audio_streams_through_as_the_upstream_sends_it(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    text = "paced words +pace300"
    body = {"model": "tts-1", "voice": "alloy", "input": text}
    headers = {"Authorization": f"Bearer {alice_key}"}
    started = time.monotonic()
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.v1 + "/audio/speech", json=body, headers=headers) as reply,
    ):
        parts = reply.iter_raw()
        first = next(parts)
        first_at = time.monotonic() - started
        rest = b"".join(parts)
        total = time.monotonic() - started
    assert first + rest == speech_for(text)[0]
    # Three 300 ms pauses follow the first chunk: it must not wait for them.
    assert total >= 0.3 * (SPEECH_CHUNKS - 1)
    assert first_at < total - 0.5
    assert reply.headers["x-accel-buffering"] == "no"


def test_client_that_leaves_mid_audio_leaves_a_disconnected_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    text = "long reading +pace500"
    body = {"model": "tts-1", "voice": "alloy", "input": text}
    headers = {"Authorization": f"Bearer {alice_key}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.v1 + "/audio/speech", json=body, headers=headers) as reply,
    ):
        assert next(reply.iter_raw())
    row = wait_for_row()
    assert row.status == UsageStatus.CLIENT_DISCONNECTED
    assert (row.prompt_tokens, row.completion_tokens) == (count_text(text), 0)
    assert row.usage_estimated is True
    deadline = time.monotonic() + 5
    while fake.stats()["streams_disconnected"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["streams_disconnected"] == 1
    assert UsageLog.objects.count() == 1


def test_upstream_cut_mid_audio_aborts_the_reply_and_leaves_an_upstream_error_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    text = "cut short +cut"
    body = {"model": "tts-1", "voice": "alloy", "input": text}
    headers = {"Authorization": f"Bearer {alice_key}"}
    received: list[bytes] = []
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.v1 + "/audio/speech", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            received.extend(reply.iter_raw())
    audio = speech_for(text)[0]
    assert 0 < len(b"".join(received)) < len(audio)
    row = wait_for_row()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 200)
    assert row.error == "the upstream stream was cut off"
    assert (row.prompt_tokens, row.usage_estimated) == (count_text(text), True)


def test_v1_upstream_falls_back_to_the_openai_tts_driver_once(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-v1", token="v1-old-wire-token")
    sdk = client(gateway, alice_key)
    first = sdk.audio.speech.create(model="tts-1", voice="nova", input=TEXT)
    second = sdk.audio.speech.create(model="tts-1", voice="nova", input="Again.")
    assert first.content == speech_for(TEXT)[0]
    assert second.content == speech_for("Again.")[0]
    drivers = [call["driver"] for call in tts_calls(fake)]
    assert drivers == ["ai-tts", "openai-tts", "openai-tts"]


def test_upstream_out_of_credits_is_a_503_and_an_upstream_error_row(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("puter-broke", token="broke-token")
    with pytest.raises(openai.APIStatusError) as raised:
        client(gateway, alice_key).audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert raised.value.status_code == 503
    assert raised.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    row = UsageLog.objects.get()
    assert (row.endpoint, row.status, row.http_status) == (
        Endpoint.SPEECH,
        UsageStatus.UPSTREAM_ERROR,
        503,
    )


def test_voice_the_upstream_refuses_is_a_400_without_retry(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway, alice_key).audio.speech.create(model="tts-1", voice="robot", input=TEXT)
    assert raised.value.body["message"] == (  # type: ignore[index]
        "The upstream refused the request: Invalid voice: robot"
    )
    assert UsageLog.objects.get().status == UsageStatus.INVALID_REQUEST
    assert len(tts_calls(fake)) == 1


def test_refused_bodies_are_400s_with_invalid_request_rows(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    bodies = [
        ({"model": "tts-1", "voice": "alloy", "input": "   "}, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input"),
        ({"model": "tts-1", "input": "hello"}, "voice"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"}, None),
    ]
    for body, param in bodies:
        reply = httpx.post(gateway.v1 + "/audio/speech", json=body, headers=headers)
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param
    rows = list(UsageLog.objects.all())
    assert [r.status for r in rows] == [UsageStatus.INVALID_REQUEST] * 4
    assert {(r.endpoint, r.model) for r in rows} == {(Endpoint.SPEECH, "tts-1")}
    assert tts_calls(fake) == []
