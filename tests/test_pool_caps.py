"""Account caps over real HTTP: across two workers, shared by tokens, and the brief queue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from accounts.models import UsageLog, UsageStatus
from gateway.models import Provider, Upstream
from gateway.testing.fake_scenarios import expected_text
from tests.conftest import Fake, Gateway, OpenAIFake, start_gateway
from tests.test_pool import MESSAGES, chat, content_of

pytestmark = pytest.mark.django_db(transaction=True)

MakeUpstream = Callable[..., Upstream]


@pytest.fixture(scope="module")
def two_worker_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "pool-caps", workers=2, UPSTREAM_QUEUE_TIMEOUT="20")
    yield server
    server.process.terminate()
    server.process.wait(10)


def stream_all(gateway: Gateway, key: str, model: str, n: int) -> list[tuple[int, str, float]]:
    def one(_: int) -> tuple[int, str, float]:
        started = time.monotonic()
        reply = chat(gateway, key, model, stream=True)
        return reply.status_code, content_of(reply), time.monotonic() - started

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("provider", [Provider.PUTER, Provider.OPENAI])
def test_two_accounts_with_cap_3_serve_12_slow_streams_never_more_than_3_at_once_each(
    two_worker_gateway: Gateway,
    fake: Fake,
    fake_openai: OpenAIFake,
    alice_key: str,
    make_upstream: MakeUpstream,
    provider: str,
) -> None:
    base_url = fake_openai.base_url if provider == Provider.OPENAI else ""
    for name in ("a", "b"):
        make_upstream(
            label=f"acct-{name}",
            token=f"ok-acct{name.upper()}-token",
            provider=provider,
            base_url=base_url,
            max_concurrency=3,
        )
    results = stream_all(two_worker_gateway, alice_key, "gpt-4o-mini+pace100+chunks5", 12)
    assert [(status, text) for status, text, _ in results] == [(200, expected_text(5))] * 12
    # Six at a time: the second six waited for the first to finish (about 0.4 s each).
    assert sum(elapsed > 0.7 for *_, elapsed in results) >= 6
    stats = (fake_openai if provider == Provider.OPENAI else fake).stats()
    assert stats["max_in_flight_by_token"] == {"ok-acctA": 3, "ok-acctB": 3}
    assert stats["calls"] == 12


def test_tokens_of_one_account_share_its_cap(
    two_worker_gateway: Gateway, fake: Fake, alice_key: str, make_upstream: MakeUpstream
) -> None:
    for name in ("one", "two"):
        make_upstream(label=name, token=f"ok-{name}-token", account="shared", max_concurrency=3)
    results = stream_all(two_worker_gateway, alice_key, "gpt-4o-mini+pace50+chunks5", 8)
    assert {status for status, *_ in results} == {200}
    assert fake.stats()["max_in_flight"] == 3


@pytest.fixture(scope="module")
def impatient_queue_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "pool-busy", UPSTREAM_QUEUE_TIMEOUT="0.5")
    yield server
    server.process.terminate()
    server.process.wait(10)


def test_every_upstream_at_its_cap_past_the_queue_timeout_is_503_upstream_busy(
    impatient_queue_gateway: Gateway, fake: Fake, alice_key: str, make_upstream: MakeUpstream
) -> None:
    make_upstream(label="single", token="ok-single", max_concurrency=1)
    body = {"model": "gpt-4o-mini+pace300+chunks6", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {alice_key}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST", impatient_queue_gateway.v1 + "/chat/completions", json=body, headers=headers
        ) as slow,
    ):
        lines = slow.iter_lines()
        next(lines)  # the slot is held from here on
        started = time.monotonic()
        reply = chat(impatient_queue_gateway, alice_key)
        waited = time.monotonic() - started
        assert list(lines)[-2:] == ["data: [DONE]", ""]
    assert reply.status_code == 503
    assert reply.json()["error"] == {
        "message": "Every upstream is at its concurrency cap; retry shortly.",
        "type": "api_error",
        "param": None,
        "code": "upstream_busy",
    }
    assert 0.45 < waited < 1.5
    assert fake.stats()["calls"] == 1
    busy_row = UsageLog.objects.get(request_id=reply.headers["x-request-id"])
    assert (busy_row.status, busy_row.upstream) == (UsageStatus.UPSTREAM_ERROR, None)
