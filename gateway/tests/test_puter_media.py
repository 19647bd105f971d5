"""Puter's media wire (PUTER.md part A, B 4 to B 6): arguments out, results in."""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.providers.base import FailureKind, UpstreamFailure, VideoRequest
from gateway.providers.media_replies import checked_type, decode_data_uri, media_ref
from gateway.providers.puter_media import (
    image_args,
    speech_args,
    speech_driver,
    video_args,
)


def test_image_size_becomes_width_and_height() -> None:
    assert image_args(prompt="fox", model="m", size="1536x1024", quality="high") == {
        "prompt": "fox",
        "model": "m",
        "quality": "high",
        "width": 1536,
        "height": 1024,
    }
    assert image_args(prompt="fox", model="m", size="auto", quality=None) == {
        "prompt": "fox",
        "model": "m",
    }


def test_openai_speech_models_go_to_the_openai_provider() -> None:
    assert speech_args(text="Hi", model="tts-1-hd", voice="nova", response_format="opus") == {
        "text": "Hi",
        "voice": "nova",
        "response_format": "opus",
        "provider": "openai",
        "model": "tts-1-hd",
    }
    other = speech_args(text="Hi", model="neural", voice="Joanna", response_format="mp3")
    assert "provider" not in other
    assert other["model"] == "neural"


def test_legacy_speech_driver_follows_the_voice() -> None:
    assert speech_driver("alloy").legacy == "openai-tts"
    assert speech_driver("Joanna").legacy == "aws-polly"
    assert speech_driver("Joanna").name == "ai-tts"


def test_video_args_carry_the_reference_only_when_given() -> None:
    plain = VideoRequest(prompt="p", model="veo", seconds=8, size="1280x720")
    assert video_args(plain) == {"prompt": "p", "model": "veo", "seconds": 8, "size": "1280x720"}
    with_ref = VideoRequest("p", "veo", 4, "720x1280", input_reference="https://x/y.png")
    assert video_args(with_ref)["input_reference"] == "https://x/y.png"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("data:image/png;base64,AAAA", "data:image/png;base64,AAAA"),
        ("https://cdn.example/a.png", "https://cdn.example/a.png"),
        ({"url": "https://a"}, "https://a"),
        ({"asset_url": "https://b", "content_type": "video/mp4"}, "https://b"),
        ({"href": "http://c"}, "http://c"),
        ({"stream": {"_events": {}}, "content_type": "video/mp4"}, None),
        ("ftp://nope", None),
        (None, None),
    ],
)
def test_media_ref_finds_the_url_or_data_uri(result: object, expected: str | None) -> None:
    assert media_ref(result) == expected


def test_data_uris_decode_with_a_size_cap() -> None:
    media = decode_data_uri("data:image/png;base64," + base64.b64encode(b"png!").decode(), 10)
    assert (media.content, media.content_type) == (b"png!", "image/png")
    assert decode_data_uri("data:text/plain,a%20b", 10).content == b"a b"
    with pytest.raises(UpstreamFailure, match="over 3 bytes"):
        decode_data_uri("data:image/png;base64," + base64.b64encode(b"x" * 30).decode(), 3)
    with pytest.raises(UpstreamFailure, match="malformed"):
        decode_data_uri("data:image/png;base64,@@@", 10)


def test_binary_replies_must_be_of_the_expected_kind() -> None:
    def reply(content_type: str) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type})

    assert checked_type(reply("audio/mpeg"), "audio") == "audio/mpeg"
    assert checked_type(reply("application/octet-stream"), "video") == "application/octet-stream"
    with pytest.raises(UpstreamFailure) as raised:
        checked_type(reply("text/html; charset=utf-8"), "image")
    assert raised.value.kind is FailureKind.SERVER
    assert raised.value.message == "the upstream sent text/html instead of image"
