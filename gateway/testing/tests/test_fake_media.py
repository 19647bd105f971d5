from __future__ import annotations

import base64
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.testing.fake_media import (
    OPENAI_VOICES,
    SPEECH_CHUNKS,
    VIDEO_MODELS,
    data_uri,
    png_for,
    speech_for,
    video_for,
)
from gateway.testing.fake_puter import FakePuter

JsonDict = dict[str, Any]
IMAGE = ("puter-image-generation", "generate")
TTS = ("puter-tts", "synthesize")
VIDEO = ("puter-video-generation", "generate")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = uvicorn.Config(
        FakePuter(), host="127.0.0.1", port=0, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5) as http:
        assert http.post("/_fake/reset").json() == {"ok": True}
        yield http


def call(
    client: httpx.Client,
    kind: tuple[str, str],
    driver: str | None,
    token: str = "tok-alice",
    **args: Any,
) -> httpx.Response:
    body: JsonDict = {"interface": kind[0], "method": kind[1], "args": args, "auth_token": token}
    if driver is not None:
        body["driver"] = driver
    return client.post("/drivers/call", json=body)


def test_png_for_is_a_valid_png_that_depends_on_the_prompt() -> None:
    png = png_for("a red fox")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png[12:16] == b"IHDR"
    idat_length = int.from_bytes(png[33:37], "big")
    assert zlib.decompress(png[41 : 41 + idat_length])[:1] == b"\x00"
    assert png == png_for("a red fox")
    assert png != png_for("a blue fox")


def test_v2_image_is_a_data_uri_of_the_prompts_png(client: httpx.Client) -> None:
    reply = call(client, IMAGE, "ai-image", prompt="a red fox", width=1024, height=1536)
    assert reply.status_code == 200
    assert reply.json() == {
        "success": True,
        "result": data_uri(png_for("a red fox"), "image/png"),
        "service": {"name": "ai-image"},
    }
    recorded = client.get("/_fake/stats").json()["requests"][-1]["body"]
    assert recorded["args"] == {"prompt": "a red fox", "width": 1024, "height": 1536}
    assert recorded["auth_token"] == "tok-alic..."


def test_v2_image_accepts_a_provider_alias_as_driver(client: httpx.Client) -> None:
    reply = call(client, IMAGE, "openai-image-generation", prompt="fox")
    assert reply.json()["service"] == {"name": "openai-image-generation"}
    assert reply.json()["result"] == data_uri(png_for("fox"), "image/png")


def test_v2_image_url_and_object_results_point_at_the_fakes_own_media(
    client: httpx.Client, base_url: str
) -> None:
    url = call(client, IMAGE, "ai-image", prompt="fox +url").json()["result"]
    assert url.startswith(base_url + "/_fake/media/image-")
    fetched = client.get(url)
    assert (fetched.status_code, fetched.headers["content-type"]) == (200, "image/png")
    assert fetched.content == png_for("fox +url")
    result = call(client, IMAGE, "ai-image", prompt="fox +object").json()["result"]
    assert client.get(result["url"]).content == png_for("fox +object")


def test_unknown_media_name_is_a_404(client: httpx.Client) -> None:
    reply = client.get("/_fake/media/image-nothing.png")
    assert reply.status_code == 404
    assert reply.json() == {"error": "Not found", "code": "not_found"}


def test_v1_image_is_raw_png_bytes_and_refuses_ai_image(client: httpx.Client) -> None:
    raw = call(client, IMAGE, "openai-image-generation", token="v1-tok", prompt="fox")
    assert (raw.status_code, raw.headers["content-type"]) == (200, "image/png")
    assert raw.content == png_for("fox")
    refused = call(client, IMAGE, "ai-image", token="v1-tok", prompt="fox")
    assert refused.status_code == 200
    assert refused.json() == {
        "success": False,
        "error": "Calling ai-image directly is not yet supported",
    }
    assert call(client, IMAGE, None, token="v1-tok", prompt="fox").content == png_for("fox")


def test_v2_refuses_a_legacy_chat_style_driver_name(client: httpx.Client) -> None:
    reply = call(client, IMAGE, "claude", prompt="fox")
    assert reply.status_code == 404
    assert reply.json()["message"] == "Driver not found: puter-image-generation:claude"


def test_image_errors_follow_the_token_and_the_arguments(client: httpx.Client) -> None:
    broke = call(client, IMAGE, "ai-image", token="broke-1", prompt="fox")
    assert broke.status_code == 402
    assert broke.headers["x-needs-upgrade"] == "true"
    assert broke.json()["code"] == "insufficient_funds"
    assert call(client, IMAGE, "ai-image", token="busy-1", prompt="fox").status_code == 429
    assert call(client, IMAGE, "ai-image", token="bad-1", prompt="fox").status_code == 401
    unknown = call(client, IMAGE, "ai-image", prompt="fox", model="nope")
    assert (unknown.status_code, unknown.json()["message"]) == (400, "Model not found: nope")
    missing = call(client, IMAGE, "ai-image")
    assert missing.json()["message"] == "Missing required argument: prompt"
    v1_broke = call(client, IMAGE, None, token="v1broke-1", prompt="fox")
    assert v1_broke.status_code == 200
    assert v1_broke.json()["error"]["status"] == 402


def test_speech_is_chunked_audio_deterministic_from_the_text(client: httpx.Client) -> None:
    body = {
        "interface": "puter-tts",
        "driver": "ai-tts",
        "method": "synthesize",
        "args": {"text": "Hello there", "provider": "openai", "voice": "alloy"},
        "auth_token": "tok-alice",
    }
    with client.stream("POST", "/drivers/call", json=body) as reply:
        assert reply.headers["content-type"] == "audio/mpeg"
        parts = list(reply.iter_raw())
    assert b"".join(parts) == speech_for("Hello there")[0]
    assert len(parts) >= SPEECH_CHUNKS
    assert speech_for("Hello there")[0].startswith(b"ID3")
    assert speech_for("Hello there") != speech_for("Hello here")


def test_cut_speech_drops_the_connection_after_half_the_audio(client: httpx.Client) -> None:
    body = {
        "interface": "puter-tts",
        "method": "synthesize",
        "args": {"text": "Hello +cut"},
        "auth_token": "tok-alice",
    }
    received: list[bytes] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/drivers/call", json=body) as reply,
    ):
        received.extend(reply.iter_raw())
    audio = speech_for("Hello +cut")[0]
    assert b"".join(received) == audio[: len(b"".join(received))]
    assert 0 < len(b"".join(received)) < len(audio)


def test_speech_formats_and_voices(client: httpx.Client) -> None:
    wav = call(client, TTS, "ai-tts", text="Hi", provider="openai", response_format="wav")
    assert wav.headers["content-type"] == "audio/wav"
    assert wav.content == speech_for("Hi", "wav")[0]
    assert wav.content.startswith(b"RIFF")
    assert speech_for("Hi", "opus")[1] == "audio/ogg"
    bad_voice = call(client, TTS, "openai-tts", text="Hi", provider="openai", voice="robot")
    assert (bad_voice.status_code, bad_voice.json()["message"]) == (400, "Invalid voice: robot")
    assert "alloy" in OPENAI_VOICES
    polly = call(client, TTS, "aws-polly", token="v1-tok", text="Hi", voice="Joanna")
    assert polly.content == speech_for("Hi")[0]
    assert call(client, TTS, "ai-tts", token="broke-2", text="Hi").status_code == 402


def test_video_models_list_puts_sora_first(client: httpx.Client) -> None:
    assert client.get("/puterai/video/models").json() == {"models": list(VIDEO_MODELS)}
    assert VIDEO_MODELS[0].startswith("sora-")


def test_v2_video_is_a_url_of_the_fakes_mp4(client: httpx.Client) -> None:
    model = "veo-3.1-fast-generate-preview"
    url = call(client, VIDEO, "ai-video", prompt="waves", model=model).json()["result"]
    fetched = client.get(url)
    assert (fetched.headers["content-type"], fetched.content) == ("video/mp4", video_for("waves"))
    assert video_for("waves")[4:8] == b"ftyp"
    data = call(client, VIDEO, "ai-video", prompt="waves +data", model=model).json()["result"]
    assert base64.b64decode(data.split(",", 1)[1]) == video_for("waves +data")
    asset = call(client, VIDEO, "ai-video", prompt="w +object", model=model).json()["result"]
    assert client.get(asset["asset_url"]).content == video_for("w +object")


def test_v2_sora_answers_a_billed_body_with_no_video(client: httpx.Client) -> None:
    reply = call(client, VIDEO, "ai-video", prompt="waves")
    result = reply.json()["result"]
    assert reply.status_code == 200
    assert result["content_type"] == "video/mp4"
    assert "url" not in result
    assert isinstance(result["stream"], dict)


def test_v1_video_is_raw_mp4(client: httpx.Client) -> None:
    reply = call(client, VIDEO, "openai-video-generation", token="v1-tok", prompt="waves")
    assert (reply.headers["content-type"], reply.content) == ("video/mp4", video_for("waves"))


def test_delay_directive_holds_the_reply(client: httpx.Client) -> None:
    started = time.monotonic()
    call(client, IMAGE, "ai-image", prompt="fox +delay200")
    assert time.monotonic() - started >= 0.2
