"""Limits that hold across workers and instances: exact rpm, concurrency, budgets.

With REDIS_URL (the PostgreSQL + Redis pass): two gateway instances of two workers each on
one database and one Redis. Without it (SQLite): one instance of two workers sharing the
database's counters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from accounts.models import UsageLog, UsageStatus
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def instances(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[list[Gateway]]:
    count = 2 if os.environ.get("REDIS_URL") else 1
    with django_db_blocker.unblock():
        servers = [start_gateway(fake_server.url, f"shared{n}", workers=2) for n in range(count)]
    yield servers
    for server in servers:
        server.process.terminate()
        server.process.wait(10)


def spread(instances: list[Gateway]) -> Iterator[str]:
    return itertools.cycle([gateway.v1 + "/chat/completions" for gateway in instances])


async def post_all(urls: list[str], key: str, body: dict[str, Any]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        headers = {"Authorization": f"Bearer {key}"}
        return await asyncio.gather(*(client.post(u, json=body, headers=headers) for u in urls))


@pytest.mark.usefixtures("upstream")
def test_rpm_50_admits_exactly_50_of_200_concurrent_requests(
    instances: list[Gateway], fake: Fake, make_key: Callable[..., str]
) -> None:
    key = make_key("rhea", rpm=50)
    urls = list(itertools.islice(spread(instances), 200))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    replies = asyncio.run(post_all(urls, key, body))
    statuses = [reply.status_code for reply in replies]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 150
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 50
    assert UsageLog.objects.filter(status=UsageStatus.REJECTED).count() == 150


async def _until_done(
    client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any], *, stop_code: str
) -> list[int]:
    """Send streams one after another; back off on concurrency refusals; stop on `stop_code`."""
    statuses: list[int] = []
    for _ in range(400):
        async with client.stream(
            "POST", url, json=body, headers={"Authorization": f"Bearer {key}"}
        ) as reply:
            data = await reply.aread()
        statuses.append(reply.status_code)
        if reply.status_code == 200:
            if stop_code == "":
                return statuses
            continue
        if stop_code and stop_code.encode() in data:
            return statuses
        await asyncio.sleep(0.03)
    raise AssertionError("never finished")


async def _run_clients(
    instances: list[Gateway], key: str, body: dict[str, Any], clients: int, stop_code: str
) -> list[list[int]]:
    urls = list(itertools.islice(spread(instances), clients))
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as http:
        return await asyncio.gather(
            *(_until_done(http, url, key, body, stop_code=stop_code) for url in urls)
        )


@pytest.mark.usefixtures("upstream")
def test_concurrency_3_never_has_more_than_3_in_flight_at_the_fake(
    instances: list[Gateway], fake: Fake, make_key: Callable[..., str]
) -> None:
    key = make_key("cora", max_concurrency=3)
    body = {
        "model": "gpt-4o-mini+pace40+chunks5",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    runs = asyncio.run(_run_clients(instances, key, body, clients=12, stop_code=""))
    assert all(run[-1] == 200 for run in runs)  # every client got its answer in the end
    assert sum(run.count(429) for run in runs) > 0  # and some had to wait
    stats = fake.stats()
    assert stats["max_in_flight"] <= 3
    assert stats["streams_completed"] == 12
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 12


@pytest.mark.usefixtures("upstream")
def test_a_1000_token_budget_overshoots_only_by_what_was_in_flight(
    instances: list[Gateway], fake: Fake, make_key: Callable[..., str]
) -> None:
    key = make_key("bea", token_budget=1000)
    body = {
        "model": "gpt-4o-mini+pace10+chunks10",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me about budgets."}],
    }
    asyncio.run(_run_clients(instances, key, body, clients=20, stop_code="insufficient_quota"))
    ok = sorted(UsageLog.objects.filter(status=UsageStatus.OK), key=_finished)
    per_request = max(row.total_tokens for row in ok)
    running, crossed = 0, None
    for row in ok:
        running += row.total_tokens
        if running >= 1000:
            crossed = row
            break
    assert crossed is not None
    # The crossing row's time is taken just before its transaction commits; admission sees
    # it only once committed. Requests admitted in that gap were in flight too.
    ran_out = _finished(crossed) + dt.timedelta(milliseconds=50)
    in_flight = [r for r in ok if r.created < ran_out and _finished(r) > _finished(crossed)]
    total = sum(row.total_tokens for row in ok)
    assert total <= 1000 + per_request * (len(in_flight) + 1)
    # Nothing was admitted after the budget ran out ...
    assert all(row.created <= ran_out for row in ok)
    # ... and the next request is refused.
    after = httpx.post(
        instances[0].v1 + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert after.status_code == 429
    assert after.json()["error"]["code"] == "insufficient_quota"


def _finished(row: UsageLog) -> dt.datetime:
    return row.created + dt.timedelta(milliseconds=row.latency_ms)
