"""One shared httpx.AsyncClient per event loop, closed on lifespan shutdown."""

from __future__ import annotations

import asyncio

import httpx
from django.conf import settings

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def upstream_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.UPSTREAM_CONNECT_TIMEOUT,
                # Between any two reads, the first included: time to first token can be long.
                read=settings.UPSTREAM_READ_TIMEOUT,
                write=settings.UPSTREAM_READ_TIMEOUT,
                pool=settings.UPSTREAM_CONNECT_TIMEOUT,
            ),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()
