"""Generated media on disk: images behind expiring capability URLs, and finished videos.

An image `url` names a file under `VAR_DIR/media` by an unguessable token: the token is the
capability, so its route takes no key. Each file's modification time is set to its expiry,
which makes the files their own index. Expired files are deleted when someone asks for them
and by a sweep that runs at most once a minute per process, during image requests.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import AsyncGenerator
from pathlib import Path

from django.conf import settings

from gateway.providers.base import Media

IMAGE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
}
SWEEP_EVERY = 60.0
CHUNK_BYTES = 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9_-]{43}\.(png|jpeg|webp|gif)")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)
_last_sweep = -SWEEP_EVERY


def media_dir() -> Path:
    return Path(settings.VAR_DIR) / "media"


def video_dir() -> Path:
    return Path(settings.VAR_DIR) / "videos"


def image_type(image: Media) -> str:
    """The image's media type: as the upstream said, else from its first bytes."""
    if image.content_type in IMAGE_EXTENSIONS:
        return image.content_type
    head = image.content[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), "image/png")


def store_images(images: list[Media]) -> list[str]:
    """Write each image under a fresh name that expires after MEDIA_URL_TTL; return the names."""
    directory = media_dir()
    directory.mkdir(parents=True, exist_ok=True)
    expires = time.time() + settings.MEDIA_URL_TTL
    names = []
    for image in images:
        name = f"{secrets.token_urlsafe(32)}.{IMAGE_EXTENSIONS[image_type(image)]}"
        path = directory / name
        path.write_bytes(image.content)
        # The modification time is the expiry: nobody can ask for a name not yet handed out.
        os.utime(path, (expires, expires))
        names.append(name)
    sweep_if_due()
    return names


def read_image(name: str) -> tuple[bytes, str] | None:
    """The image and its media type, or None when the name is unknown or has expired."""
    sweep_if_due()
    if _NAME.fullmatch(name) is None:
        return None
    path = media_dir() / name
    try:
        if path.stat().st_mtime <= time.time():
            path.unlink(missing_ok=True)
            return None
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    return content, "image/" + name.rsplit(".", 1)[1]


def sweep_if_due() -> None:
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_EVERY:
        return
    _last_sweep = now
    sweep_expired()


def sweep_expired() -> int:
    """Delete every expired image file; return how many went."""
    now = time.time()
    removed = 0
    for path in media_dir().glob("*"):
        try:
            if path.stat().st_mtime <= now:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process swept it first
    return removed


def store_video(job_id: str, content: bytes) -> str:
    """Write a finished video; return its path relative to VAR_DIR."""
    directory = video_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{job_id}.mp4"
    partial = path.with_suffix(".part")
    partial.write_bytes(content)
    partial.replace(path)
    return str(path.relative_to(settings.VAR_DIR))


def stored_size(relative: str) -> int | None:
    try:
        return (Path(settings.VAR_DIR) / relative).stat().st_size
    except OSError:
        return None


async def file_chunks(relative: str) -> AsyncGenerator[bytes, None]:
    """A stored file in chunks, each read off the event loop."""
    handle = await asyncio.to_thread((Path(settings.VAR_DIR) / relative).open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
