"""One shared httpx.AsyncClient per event loop, closed on lifespan shutdown.

Its transport is several small connection pools rather than one large one. httpcore's pool
walks all of its connections, some of them twice over, on every request and on every
response close (and asks the socket of each idle one whether the server closed it), so
with 64 streams in flight that walk cost more than the streams themselves. Each call goes
to the pool with the fewest calls in flight, the first of them when there is a tie: under
light load every call uses the first pool's warm connections.

The client keeps no cookies: the upstreams authenticate by token, and a cookie one account's
reply set must never ride on another account's call.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from functools import lru_cache

import httpcore
import httpx
from django.conf import settings

from gateway.upstream_network import LoopBackend

POOLS = 16
POOL_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32)

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def upstream_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = UpstreamClient(
            timeout=httpx.Timeout(
                connect=settings.UPSTREAM_CONNECT_TIMEOUT,
                # Between any two reads, the first included: time to first token can be long.
                read=settings.UPSTREAM_READ_TIMEOUT,
                write=settings.UPSTREAM_READ_TIMEOUT,
                pool=settings.UPSTREAM_CONNECT_TIMEOUT,
            ),
            transport=PoolSet(POOLS, POOL_LIMITS),
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


@lru_cache(maxsize=256)
def parsed_url(url: str) -> httpx.URL:
    """An upstream URL parsed once (httpx parses a string URL on every request)."""
    return httpx.URL(url)


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: Set-Cookie headers are neither parsed nor kept."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()


class UpstreamClient(httpx.AsyncClient):
    """httpx's client without a cookie jar (see the module's docstring)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the upstream client keeps no cookies")


async def close_clients() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()


class PoolSet(httpx.AsyncBaseTransport):
    """Connection pools side by side; a call takes the least busy, until its body closes."""

    def __init__(self, count: int, limits: httpx.Limits) -> None:
        # One TLS context for all: loading the CA bundle costs tens of milliseconds each.
        tls = httpx.create_ssl_context(trust_env=False)
        self._pools = [upstream_transport(tls, limits) for _ in range(count)]
        self.in_flight = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.in_flight.index(min(self.in_flight))
        self.in_flight[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self.in_flight[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport's
        response.stream = _Counted(response.stream, self, index)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def upstream_transport(tls: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connections on the event loop's own (gateway/upstream_network)."""
    transport = httpx.AsyncHTTPTransport(verify=tls, limits=limits, trust_env=False)
    # httpx builds its pool with httpcore's default network layer and takes no other; its
    # own arguments, with ours (tests/test_upstream_network.py checks that it is the one used).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=LoopBackend(),
    )
    return transport


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its pool's place back when it is closed."""

    def __init__(self, body: httpx.AsyncByteStream, pools: PoolSet, index: int) -> None:
        self._body, self._pools, self._index = body, pools, index
        self._open = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body.__aiter__()  # no layer of its own between the chunks

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._pools.in_flight[self._index] -= 1
        await self._body.aclose()
