"""Reading media replies: binary bodies, data URIs and result URLs, all with size caps.

PUTER.md B 4: branch on the Content-Type; a JSON `result` is a data URI, an http(s) URL to
fetch, or an object holding one under `url`, `asset_url` or `href`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx

from gateway.providers.base import FailureKind, Media, UpstreamFailure
from gateway.providers.puter import USER_AGENT
from gateway.providers.puter_wire import envelope_result

BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_MEDIA_KEYS = ("url", "asset_url", "href")


def media_type_of(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def is_json(response: httpx.Response) -> bool:
    media_type = media_type_of(response)
    return not media_type or "json" in media_type


def checked_type(response: httpx.Response, kind: str) -> str:
    """The media type of a binary reply, which must be of `kind` (or untyped bytes)."""
    media_type = media_type_of(response)
    if media_type.startswith(kind + "/") or media_type in BINARY_TYPES:
        return media_type
    raise UpstreamFailure(
        FailureKind.SERVER, f"the upstream sent {media_type} instead of {kind}", status=502
    )


def media_ref(result: Any) -> str | None:
    """The data URI or URL a JSON result points at (B 4: a string, or url/asset_url/href)."""
    if isinstance(result, dict):
        result = next((result[k] for k in _MEDIA_KEYS if isinstance(result.get(k), str)), None)
    if isinstance(result, str) and result.startswith(("data:", "https://", "http://")):
        return str(result)
    return None


async def read_media(client: httpx.AsyncClient, reply: Any, *, kind: str, limit: int) -> Media:
    """Whole media from a binary reply, a data URI, or a URL fetched with a size cap."""
    if isinstance(reply, httpx.Response):
        try:
            media_type = checked_type(reply, kind)
        except UpstreamFailure:
            await reply.aclose()
            raise
        return Media(await read_bytes(reply, limit), media_type)
    ref = media_ref(envelope_result(reply))
    if ref is None:
        raise UpstreamFailure(FailureKind.SERVER, f"the upstream sent no {kind}", status=502)
    if ref.startswith("data:"):
        return decode_data_uri(ref, limit)
    return await _fetch(client, ref, kind, limit)


def decode_data_uri(uri: str, limit: int) -> Media:
    header, _, data = uri[5:].partition(",")
    media_type = header.split(";", 1)[0].strip().lower() or "application/octet-stream"
    if len(data) > limit * 4 // 3 + 4:
        raise UpstreamFailure(FailureKind.SERVER, f"the upstream media is over {limit} bytes")
    try:
        content = (
            base64.b64decode(data, validate=True)
            if header.endswith(";base64")
            else unquote_to_bytes(data)
        )
    except (binascii.Error, ValueError):
        raise UpstreamFailure(
            FailureKind.SERVER, "the upstream sent a malformed data URI", status=502
        ) from None
    return Media(content, media_type)


async def _fetch(client: httpx.AsyncClient, url: str, kind: str, limit: int) -> Media:
    # The URL is the upstream's result: fetch it without the Puter token.
    request = client.build_request("GET", url, headers={"User-Agent": USER_AGENT})
    try:
        response = await client.send(request, stream=True, follow_redirects=True)
    except httpx.TimeoutException:
        raise UpstreamFailure(
            FailureKind.TIMEOUT, f"the upstream's {kind} URL did not answer", status=504
        ) from None
    except httpx.HTTPError:
        raise UpstreamFailure(
            FailureKind.SERVER, f"the upstream's {kind} URL could not be reached", status=502
        ) from None
    if not response.is_success:
        await response.aclose()
        message = f"the upstream's {kind} URL answered HTTP {response.status_code}"
        raise UpstreamFailure(FailureKind.SERVER, message, status=502)
    return await read_media(client, response, kind=kind, limit=limit)


async def read_bytes(response: httpx.Response, limit: int) -> bytes:
    """Read a whole binary body of at most `limit` bytes and close the response."""
    too_large = UpstreamFailure(FailureKind.SERVER, f"the upstream media is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise UpstreamFailure(FailureKind.TIMEOUT, "the upstream went silent", status=504) from None
    except httpx.HTTPError:
        raise UpstreamFailure(FailureKind.SERVER, "the upstream media was cut off") from None
    finally:
        await response.aclose()
    return b"".join(chunks)


class BinaryStream:
    """A binary reply passed through as it arrives; its first bytes are read up front."""

    def __init__(self, response: httpx.Response, content_type: str) -> None:
        self.content_type = content_type
        self._response = response
        self._chunks = _iter_bytes(response)
        self._first = b""

    async def start(self) -> None:
        """Read the first bytes: an upstream that fails before them may still be replaced."""
        try:
            self._first = await anext(self._chunks, b"")
        except UpstreamFailure:
            await self.aclose()
            raise
        if not self._first:
            await self.aclose()
            raise UpstreamFailure(FailureKind.SERVER, "the upstream sent no audio", status=502)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._first:
            yield self._first
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._response.aclose()


async def _iter_bytes(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in response.aiter_bytes():
            if chunk:
                yield chunk
    except httpx.TimeoutException:
        raise UpstreamFailure(FailureKind.TIMEOUT, "the upstream went silent", status=504) from None
    except httpx.HTTPError:
        raise UpstreamFailure(FailureKind.SERVER, "the upstream stream was cut off") from None


class WholeStream:
    """Media that came whole (a JSON result) played back as a stream."""

    def __init__(self, media: Media) -> None:
        self.content_type = media.content_type
        self._content = media.content

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._content

    async def aclose(self) -> None:
        return None
