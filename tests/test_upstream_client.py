"""The upstream client's pools: light load stays on warm connections, load spreads out."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest

from gateway.upstream_client import PoolSet
from tests.conftest import OpenAIFake

HEADERS = {"Authorization": "Bearer ok-pool-token"}


def chat(model: str, *, stream: bool) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def test_calls_one_after_another_share_the_first_pools_connection(
    fake_openai: OpenAIFake,
) -> None:
    pools = PoolSet(4, httpx.Limits(max_connections=8, max_keepalive_connections=8))

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=pools) as client:
            for _ in range(5):
                reply = await client.post(
                    fake_openai.base_url + "/chat/completions",
                    json=chat("gpt-4o-mini", stream=False),
                    headers=HEADERS,
                )
                assert reply.status_code == 200
            return list(pools.in_flight)

    assert asyncio.run(main()) == [0, 0, 0, 0]
    stats = fake_openai.stats()
    assert stats["calls"] == 5
    assert len(stats["connections"]) == 1


def test_streams_in_flight_spread_over_the_pools_and_give_their_place_back(
    fake_openai: OpenAIFake,
) -> None:
    pools = PoolSet(4, httpx.Limits(max_connections=8, max_keepalive_connections=8))

    async def main() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(transport=pools) as client:
            replies = []
            for _ in range(6):
                request = client.build_request(
                    "POST",
                    fake_openai.base_url + "/chat/completions",
                    json=chat("gpt-4o-mini+pace50+chunks4", stream=True),
                    headers=HEADERS,
                )
                replies.append(await client.send(request, stream=True))
            during = list(pools.in_flight)
            for reply in replies:
                await reply.aread()
                await reply.aclose()
            return during, list(pools.in_flight)

    during, after = asyncio.run(main())
    assert during == [2, 2, 1, 1]
    assert after == [0, 0, 0, 0]
    assert len(fake_openai.stats()["connections"]) == 6


def test_a_call_that_fails_gives_its_place_back() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    pools = PoolSet(2, httpx.Limits(max_connections=2, max_keepalive_connections=2))

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=pools) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
            return list(pools.in_flight)

    assert asyncio.run(main()) == [0, 0]


def test_the_pools_share_one_tls_context_that_verifies_certificates() -> None:
    # The CA bundle is loaded once, not once per pool (tens of milliseconds each).
    pools = PoolSet(16, httpx.Limits(max_connections=8))
    contexts = {id(pool._pool._ssl_context) for pool in pools._pools}
    assert len(contexts) == 1
    context = pools._pools[0]._pool._ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
