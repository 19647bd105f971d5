"""Reading an upstream's JSON reply: bounded, closed after, failures as UpstreamFailure."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from gateway.providers.base import FailureKind, UpstreamFailure

MAX_JSON_BYTES = 16 * 1024 * 1024


async def read_json(response: httpx.Response) -> Any:
    """Read a bounded JSON body and close the response; an error body may come back as text."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_JSON_BYTES:
                raise UpstreamFailure(FailureKind.SERVER, "the upstream reply is too large")
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise UpstreamFailure(
            FailureKind.TIMEOUT, "the upstream did not answer in time", status=504
        ) from None
    except httpx.HTTPError:
        raise UpstreamFailure(FailureKind.SERVER, "the upstream reply was cut off") from None
    finally:
        await response.aclose()
    raw = b"".join(chunks)
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        if response.is_success:
            raise UpstreamFailure(
                FailureKind.SERVER, "the upstream sent an unreadable reply", status=502
            ) from None
        return raw[:300].decode(errors="replace")
