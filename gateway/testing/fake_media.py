"""The fake Puter's media drivers (PUTER.md B 4 to B 6): images, speech and video.

Every reply is a pure function of the prompt or text, so tests compute the exact bytes a
client should get (`png_for`, `speech_for`, `video_for`). Directives inside the prompt or
text choose how a reply goes: `+url` / `+object` (an image or video result as a URL served by
the fake, or an object holding one), `+data` (a video as a data URI), `+delayN` (answer after
N ms), `+paceN` (speech: N ms between audio chunks), `+cut` (speech: the connection drops
after half the audio). Video model ids starting with `sora-`
answer as Puter v2 does (B 14): a billed JSON body with no video in it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

IMAGE_INTERFACE = "puter-image-generation"
TTS_INTERFACE = "puter-tts"
VIDEO_INTERFACE = "puter-video-generation"
MEDIA_PATH = "/_fake/media/"
DEFAULT_IMAGE_MODEL = "gpt-image-1-mini"
DEFAULT_VIDEO_MODEL = "sora-2"
IMAGE_MODELS = frozenset({"gpt-image-1-mini", "gpt-image-1", "gpt-image-1.5", "dall-e-3"})
VIDEO_MODELS = ("sora-2", "sora-2-pro", "veo-3.1-fast-generate-preview")
OPENAI_VOICES = frozenset({"alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "shimmer"})
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SPEECH_CHUNKS = 4
SPEECH_BYTES = 24 * 1024
VIDEO_BYTES = 96 * 1024
_IMAGE_SIDE = 4
_NUMBER = re.compile(r"\+(delay|pace)(\d+)")
_MEDIA_NAME = re.compile(r"(image|video)-([0-9a-f]{32})\.(png|mp4)")

JsonDict = dict[str, Any]


def _seed(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


def _number(text: str, name: str) -> int:
    found = {key: int(value) for key, value in _NUMBER.findall(text)}
    return found.get(name, 0)


# --- content ---------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(seed: bytes) -> bytes:
    """A 4x4 RGB PNG whose pixels come from the seed."""
    colours = (seed * 4)[: _IMAGE_SIDE * 3]
    rows = b"".join(b"\x00" + colours for _ in range(_IMAGE_SIDE))
    header = struct.pack(">IIBBBBB", _IMAGE_SIDE, _IMAGE_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _video(seed: bytes) -> bytes:
    """An MP4-looking body: an `ftyp` box, then the seed's digest over and over."""
    head = struct.pack(">I", 24) + b"ftypmp42" + b"\x00\x00\x00\x00mp42isom"
    body = hashlib.sha256(seed).digest() * (VIDEO_BYTES // 32)
    return head + body


def png_for(prompt: str) -> bytes:
    """The image the fake generates for `prompt`."""
    return _png(_seed(prompt))


def video_for(prompt: str) -> bytes:
    """The video the fake generates for `prompt`."""
    return _video(_seed(prompt))


def speech_for(text: str, response_format: str = "mp3") -> tuple[bytes, str]:
    """The audio the fake synthesises for `text`, and its content type."""
    frames = hashlib.sha256(text.encode()).digest() * (SPEECH_BYTES // 32)
    if response_format == "wav":
        header = b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt "
        header += struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
        return header + b"data" + struct.pack("<I", len(frames)) + frames, "audio/wav"
    if response_format == "mp3":
        frames = b"ID3\x04\x00\x00\x00\x00\x00\x00" + frames
    return frames, AUDIO_TYPES.get(response_format, "audio/mpeg")


def media_url(base_url: str, kind: str, prompt: str) -> str:
    extension = "png" if kind == "image" else "mp4"
    return f"{base_url}{MEDIA_PATH}{kind}-{_seed(prompt).hex()}.{extension}"


def media_by_name(name: str) -> tuple[bytes, str] | None:
    """Bytes and content type behind a URL from `media_url`, or None."""
    match = _MEDIA_NAME.fullmatch(name)
    if match is None:
        return None
    seed = bytes.fromhex(match[2])
    if match[1] == "image":
        return _png(seed), "image/png"
    return _video(seed), "video/mp4"


def data_uri(content: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(content).decode()}"


# --- drivers ---------------------------------------------------------------------------


def _text_arg(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise wire.ApiError(400, "bad_request", f"Missing required argument: {name}")
    return value


async def _send_bytes(
    call: wire.Call, chunks: list[bytes], content_type: str, pace: float, *, cut: bool = False
) -> bool:
    """Send a binary body in the given chunks; False when the client left first.

    `cut` sends half the chunks and returns without ending the body: the server drops the
    connection, as a failing upstream would.
    """
    headers = [(b"content-type", content_type.encode())]
    await call.send({"type": "http.response.start", "status": 200, "headers": headers})
    for index, chunk in enumerate(chunks[: len(chunks) // 2] if cut else chunks):
        if not await call.peer.pause(pace if index else 0):
            return False
        await call.send({"type": "http.response.body", "body": chunk, "more_body": True})
    if not cut:
        await call.send({"type": "http.response.body", "body": b""})
    return True


async def _send_result(call: wire.Call, result: object) -> None:
    envelope = {"success": True, "result": result, "service": {"name": call.driver}}
    await wire.send_json(call.send, 200, envelope)


async def _wait(call: wire.Call, text: str) -> bool:
    """Honour `+delayN`; False when the client left meanwhile."""
    if await call.peer.pause(_number(text, "delay") / 1000):
        return True
    call.stats.streams_disconnected += 1
    return False


async def generate_image(call: wire.Call) -> None:
    prompt = _text_arg(call.args, "prompt")
    model = call.args.get("model") or DEFAULT_IMAGE_MODEL
    if model not in IMAGE_MODELS:
        raise wire.ApiError(400, "bad_request", f"Model not found: {model}")
    wire.reject_token(call.caller, "broke")
    if not await _wait(call, prompt):
        return
    png = png_for(prompt)
    if call.caller.v1:
        await _send_bytes(call, [png], "image/png", 0)
    elif "+url" in prompt:
        await _send_result(call, media_url(call.base_url, "image", prompt))
    elif "+object" in prompt:
        await _send_result(call, {"url": media_url(call.base_url, "image", prompt)})
    else:
        await _send_result(call, data_uri(png, "image/png"))


async def synthesize(call: wire.Call) -> None:
    text = _text_arg(call.args, "text")
    provider = call.args.get("provider") or "aws-polly"
    voice = call.args.get("voice")
    if provider == "openai" and voice is not None and voice not in OPENAI_VOICES:
        raise wire.ApiError(400, "bad_request", f"Invalid voice: {voice}")
    wire.reject_token(call.caller, "broke")
    if not await _wait(call, text):
        return
    audio, content_type = speech_for(text, str(call.args.get("response_format") or "mp3"))
    size = -(-len(audio) // SPEECH_CHUNKS)
    chunks = [audio[start : start + size] for start in range(0, len(audio), size)]
    pace = _number(text, "pace") / 1000
    if await _send_bytes(call, chunks, content_type, pace, cut="+cut" in text):
        call.stats.streams_completed += 1
    else:
        call.stats.streams_disconnected += 1


async def generate_video(call: wire.Call) -> None:
    prompt = _text_arg(call.args, "prompt")
    model = call.args.get("model") or DEFAULT_VIDEO_MODEL
    if model not in VIDEO_MODELS:
        raise wire.ApiError(400, "bad_request", f"Model not found: {model}")
    wire.reject_token(call.caller, "broke")
    if not await _wait(call, prompt):
        return
    if call.caller.v1:
        await _send_bytes(call, [video_for(prompt)], "video/mp4", 0)
    elif str(model).startswith("sora-"):
        # Puter v2 serialises Sora's stream object instead of the video (B 14).
        stream = {"_events": {}, "_eventsCount": 0, "readable": True}
        await _send_result(call, {"stream": stream, "content_type": "video/mp4"})
    elif "+data" in prompt:
        await _send_result(call, data_uri(video_for(prompt), "video/mp4"))
    elif "+object" in prompt:
        await _send_result(call, {"asset_url": media_url(call.base_url, "video", prompt)})
    else:
        await _send_result(call, media_url(call.base_url, "video", prompt))


def interfaces() -> dict[str, wire.DriverInterface]:
    """The media entries of the fake's driver table."""
    # Called while fake_puter builds that table, before `wire` below may be bound.
    from gateway.testing.fake_puter import DriverInterface

    return {
        IMAGE_INTERFACE: DriverInterface(
            driver="ai-image",
            legacy_default="openai-image-generation",
            legacy_drivers=frozenset({"openai-image-generation", "gemini-image-generation"}),
            methods={"generate": generate_image},
            aliases=frozenset({"openai-image-generation", "gemini-image-generation"}),
        ),
        TTS_INTERFACE: DriverInterface(
            driver="ai-tts",
            legacy_default="aws-polly",
            legacy_drivers=frozenset({"aws-polly", "openai-tts"}),
            methods={"synthesize": synthesize},
            aliases=frozenset({"aws-polly", "openai-tts", "elevenlabs-tts"}),
        ),
        VIDEO_INTERFACE: DriverInterface(
            driver="ai-video",
            legacy_default="openai-video-generation",
            legacy_drivers=frozenset({"openai-video-generation"}),
            methods={"generate": generate_video},
            aliases=frozenset({"openai-video-generation", "gemini-video-generation"}),
        ),
    }


async def serve_media(request: wire.Request) -> None:
    """`GET /_fake/media/<name>`: a result URL the fake handed out."""
    found = media_by_name(request.scope["path"].removeprefix(MEDIA_PATH))
    if found is None:
        await wire.send_json(request.send, 404, {"error": "Not found", "code": "not_found"})
        return
    content, content_type = found
    headers = [(b"content-type", content_type.encode())]
    await request.send({"type": "http.response.start", "status": 200, "headers": headers})
    await request.send({"type": "http.response.body", "body": content})


async def video_models(request: wire.Request) -> None:
    await wire.send_json(request.send, 200, {"models": list(VIDEO_MODELS)})


# Last: fake_puter imports this module for its driver table, so its names are read only when
# the handlers run, whichever of the two modules is imported first.
from gateway.testing import fake_puter as wire  # noqa: E402
