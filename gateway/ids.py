"""Identifiers that must be unique, not secret: request, completion, slot and row ids.

`secrets` asks the kernel for every draw (a system call per id, several per request); no one
gains anything by guessing these ids, so they come from the `random` module's generator,
which Python seeds from the kernel and reseeds in a forked child. Key secrets and media
names, which are capabilities, stay with `secrets`.
"""

from __future__ import annotations

import base64
import random
import uuid


def hex_id(nbytes: int) -> str:
    return f"{random.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def url_id(nbytes: int) -> str:
    """Like `secrets.token_urlsafe(nbytes)`: URL-safe base64 without padding."""
    return (
        base64.urlsafe_b64encode(random.getrandbits(nbytes * 8).to_bytes(nbytes, "big"))
        .rstrip(b"=")
        .decode("ascii")
    )


def uuid4() -> uuid.UUID:
    return uuid.UUID(int=random.getrandbits(128), version=4)
