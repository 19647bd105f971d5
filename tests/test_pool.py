"""The pool over real HTTP: weights, health marks, failover, caps and the queue, two instances."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

import httpx
import orjson
import pytest

from accounts.models import UsageLog, UsageStatus
from gateway.models import Provider, Upstream, UpstreamState
from gateway.testing.fake_scenarios import MID_STREAM_ERROR, chunk_texts
from tests.conftest import Fake, Gateway, OpenAIFake, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Tell me something."}]
MakeUpstream = Callable[..., Upstream]


def chat(
    gateway: Gateway,
    key: str,
    model: str = "gpt-4o-mini",
    *,
    http: httpx.Client | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    headers = {"Authorization": f"Bearer {key}"}
    url = gateway.v1 + "/chat/completions"
    if http is None:
        return httpx.post(url, json=body, headers=headers, timeout=20)
    return http.post(url, json=body, headers=headers)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One client for a test's sequential calls: a new one per call costs a TLS context."""
    with httpx.Client(timeout=20) as client:
        yield client


def served_by(replies: list[httpx.Response]) -> list[str]:
    """The upstream named by each reply's usage row, in the order of the replies."""
    ids = [reply.headers["x-request-id"] for reply in replies]
    rows = UsageLog.objects.filter(request_id__in=ids).select_related("upstream")
    labels = {row.request_id: row.upstream.label if row.upstream else "" for row in rows}
    return [labels.get(request_id, "?") for request_id in ids]


def content_of(reply: httpx.Response) -> str:
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", reply.text[-300:]
    deltas = [orjson.loads(e)["choices"] for e in events[:-1]]
    return "".join(c[0]["delta"].get("content") or "" for c in deltas if c)


def openai_upstream(make: MakeUpstream, fake: OpenAIFake, label: str, token: str, **fields: Any):  # type: ignore[no-untyped-def]
    return make(
        label=label, token=token, provider=Provider.OPENAI, base_url=fake.base_url, **fields
    )


def test_weights_1_2_7_share_real_requests_without_long_runs(
    gateway: Gateway, fake: Fake, alice_key: str, http: httpx.Client, make_upstream: MakeUpstream
) -> None:
    for weight in (1, 2, 7):
        make_upstream(label=f"w{weight}", token=f"ok-w{weight}-token", weight=weight)
    replies = [chat(gateway, alice_key, http=http) for _ in range(100)]
    assert {reply.status_code for reply in replies} == {200}
    labels = served_by(replies)
    assert Counter(labels) == {"w1": 10, "w2": 20, "w7": 70}
    # No run longer than the weights force (see gateway/tests/test_pool.py): 1, 1 and 3.
    longest = {k: max(len(list(g)) for key, g in groupby(labels) if key == k) for k in set(labels)}
    assert longest == {"w1": 1, "w2": 1, "w7": 3}


@pytest.mark.parametrize("provider", [Provider.PUTER, Provider.OPENAI])
def test_an_upstream_answering_401_is_disabled_at_once_and_no_client_sees_it(
    gateway: Gateway,
    fake: Fake,
    fake_openai: OpenAIFake,
    alice_key: str,
    http: httpx.Client,
    make_upstream: MakeUpstream,
    provider: str,
) -> None:
    base_url = fake_openai.base_url if provider == Provider.OPENAI else ""
    bad = make_upstream(
        label="bad", token="bad-token", provider=provider, base_url=base_url, priority=1
    )
    make_upstream(label="ok", token="ok-token", provider=provider, base_url=base_url)
    replies = [chat(gateway, alice_key, http=http, stream=n % 2 == 0) for n in range(10)]
    assert [reply.status_code for reply in replies] == [200] * 10
    assert served_by(replies) == ["ok"] * 10
    bad.refresh_from_db()
    assert (bad.state, bad.consecutive_failures, bad.last_failure) == (
        UpstreamState.DISABLED,
        1,
        "auth",
    )
    assert bad.last_error in {"Authentication failed", "Incorrect API key provided."}
    assert bad.last_error_at is not None
    served = fake_openai if provider == Provider.OPENAI else fake
    assert served.stats()["calls"] == 11


def test_an_upstream_failing_half_its_calls_costs_clients_nothing_and_cools_after_3_in_a_row(
    gateway: Gateway,
    fake_openai: OpenAIFake,
    alice_key: str,
    http: httpx.Client,
    make_upstream: MakeUpstream,
) -> None:
    # `flaky3`: 3 calls answered, 3 failed with 500, and so on (UPSTREAM_FAILURES_TO_COOL=3).
    flaky = openai_upstream(make_upstream, fake_openai, "flaky", "flaky3-token", priority=1)
    openai_upstream(make_upstream, fake_openai, "ok", "ok-token")
    replies = [chat(gateway, alice_key, http=http, stream=n % 2 == 1) for n in range(12)]
    assert [reply.status_code for reply in replies] == [200] * 12
    assert served_by(replies) == ["flaky"] * 3 + ["ok"] * 9
    assert fake_openai.stats()["calls_by_token"] == {"flaky3-t": 6, "ok-token": 9}
    flaky.refresh_from_db()
    assert (flaky.state, flaky.consecutive_failures, flaky.last_failure) == (
        UpstreamState.COOLING,
        3,
        "server",
    )
    assert flaky.last_error_at is not None
    assert flaky.cooldown_until == flaky.last_error_at + dt.timedelta(seconds=30)


def test_an_upstream_failing_every_other_call_is_never_cooled_and_costs_clients_nothing(
    gateway: Gateway,
    fake_openai: OpenAIFake,
    alice_key: str,
    http: httpx.Client,
    make_upstream: MakeUpstream,
) -> None:
    flaky = openai_upstream(make_upstream, fake_openai, "flaky", "flaky1-token", priority=1)
    openai_upstream(make_upstream, fake_openai, "ok", "ok-token")
    replies = [chat(gateway, alice_key, http=http) for _ in range(10)]
    assert [reply.status_code for reply in replies] == [200] * 10
    assert Counter(served_by(replies)) == {"flaky": 5, "ok": 5}
    flaky.refresh_from_db()
    assert (flaky.state, flaky.consecutive_failures) == (UpstreamState.HEALTHY, 1)


def test_a_429_with_retry_after_2_cools_the_upstream_for_2_seconds(
    gateway: Gateway,
    fake_openai: OpenAIFake,
    alice_key: str,
    http: httpx.Client,
    make_upstream: MakeUpstream,
) -> None:
    busy = openai_upstream(make_upstream, fake_openai, "busy", "busy2-token", priority=1)
    openai_upstream(make_upstream, fake_openai, "ok", "ok-token")
    replies = [chat(gateway, alice_key, http=http)]
    busy.refresh_from_db()
    assert (busy.state, busy.last_failure) == (UpstreamState.COOLING, "rate_limited")
    assert busy.cooldown_until is not None
    assert busy.last_error_at is not None
    assert busy.cooldown_until - busy.last_error_at == dt.timedelta(seconds=2)
    while time.time() < busy.cooldown_until.timestamp() - 0.3:
        replies.append(chat(gateway, alice_key, http=http))
        time.sleep(0.1)
    assert fake_openai.stats()["calls_by_token"]["busy2-to"] == 1
    time.sleep(max(busy.cooldown_until.timestamp() - time.time(), 0) + 0.1)
    replies.append(chat(gateway, alice_key, http=http))
    assert fake_openai.stats()["calls_by_token"]["busy2-to"] == 2
    assert {reply.status_code for reply in replies} == {200}
    assert set(served_by(replies)) == {"ok"}


@pytest.mark.parametrize("provider", [Provider.PUTER, Provider.OPENAI])
def test_a_failure_after_the_first_chunk_is_not_retried(
    gateway: Gateway,
    fake: Fake,
    fake_openai: OpenAIFake,
    alice_key: str,
    make_upstream: MakeUpstream,
    provider: str,
) -> None:
    base_url = fake_openai.base_url if provider == Provider.OPENAI else ""
    for label, priority in (("first", 1), ("spare", 0)):
        make_upstream(
            label=label,
            token=f"ok-{label}-token",
            provider=provider,
            base_url=base_url,
            priority=priority,
        )
    reply = chat(gateway, alice_key, "gpt-4o-mini+failafter3+chunks6", stream=True)
    assert reply.status_code == 200
    events = [orjson.loads(line[6:]) for line in reply.text.splitlines() if line[:6] == "data: "]
    assert [e["choices"][0]["delta"].get("content") for e in events[1:-1]] == chunk_texts(6)[:3]
    assert events[-1]["error"]["message"] == MID_STREAM_ERROR
    assert "[DONE]" not in reply.text
    served = fake_openai if provider == Provider.OPENAI else fake
    assert served.stats()["calls"] == 1
    row = UsageLog.objects.get(request_id=reply.headers["x-request-id"])
    assert (row.status, row.upstream and row.upstream.label) == (
        UsageStatus.UPSTREAM_ERROR,
        "first",
    )


@pytest.mark.parametrize("stream", [False, True])
def test_with_every_upstream_down_the_client_gets_503_upstream_unavailable_in_under_50_ms(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: MakeUpstream, stream: bool
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    make_upstream(label="disabled", token="ok-down-disabled-token", state=UpstreamState.DISABLED)
    make_upstream(
        label="cooling",
        token="ok-down-cooling-token",
        state=UpstreamState.COOLING,
        cooldown_until=later,
    )
    make_upstream(label="switched-off", token="ok-down-off-token", enabled=False)
    timings = []
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    # One client for all: the time measured is the gateway's, not a new TLS context's. The
    # first call is not timed: it may be the first this gateway process serves at all.
    with httpx.Client(headers={"Authorization": f"Bearer {alice_key}"}, timeout=10) as http:
        assert http.post(gateway.v1 + "/chat/completions", json=body).status_code == 503
        for _ in range(5):
            started = time.perf_counter()
            reply = http.post(gateway.v1 + "/chat/completions", json=body)
            timings.append(time.perf_counter() - started)
            assert reply.status_code == 503
            assert reply.json()["error"]["code"] == "upstream_unavailable"
            row = UsageLog.objects.get(request_id=reply.headers["x-request-id"])
            assert (row.status, row.http_status, row.upstream) == ("upstream_error", 503, None)
    # Under 50 ms: no try, no queue, no timeout. A single slower call is the database's own
    # pause (a WAL checkpoint), so the median is held to 50 ms and every call to 250.
    assert sorted(timings)[2] < 0.05, timings
    assert max(timings) < 0.25, timings
    assert fake.stats()["calls"] == 0


def test_upstreams_that_all_fail_their_credentials_are_503_and_then_never_called(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: MakeUpstream
) -> None:
    for n in range(3):
        make_upstream(label=f"bad{n}", token=f"bad-{n}-token")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with httpx.Client(headers={"Authorization": f"Bearer {alice_key}"}, timeout=10) as http:
        first = http.post(gateway.v1 + "/chat/completions", json=body)
        started = time.perf_counter()
        second = http.post(gateway.v1 + "/chat/completions", json=body)
        elapsed = time.perf_counter() - started
    assert [first.status_code, second.status_code] == [503, 503]
    assert {first.json()["error"]["code"], second.json()["error"]["code"]} == {
        "upstream_unavailable"
    }
    assert elapsed < 0.25  # no try and no wait: see the test above for the 50 ms
    assert fake.stats()["calls"] == 3


def test_a_cookie_one_account_is_sent_never_rides_on_another_accounts_call(
    gateway: Gateway, fake: Fake, alice_key: str, http: httpx.Client, make_upstream: MakeUpstream
) -> None:
    make_upstream(label="one", token="ok-cookie-one-token")
    make_upstream(label="two", token="ok-cookie-two-token")
    replies = [chat(gateway, alice_key, http=http, stream=n % 2 == 0) for n in range(8)]
    assert [reply.status_code for reply in replies] == [200] * 8
    assert set(served_by(replies)) == {"one", "two"}
    assert all("set-cookie" not in reply.headers for reply in replies)
    calls = [r for r in fake.stats()["requests"] if r["path"] == "/drivers/call"]
    assert len(calls) == 8  # every answer set its account's session cookie
    assert [r["headers"].get("cookie") for r in calls] == [None] * 8


# --- two instances ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "pool-second")
    yield server
    server.process.terminate()
    server.process.wait(10)


def calls_with(fake: Fake, prefix: str) -> int:
    requests = fake.stats()["requests"]
    return sum(r["headers"].get("authorization", "").startswith(prefix) for r in requests)


def test_two_instances_agree_on_which_upstreams_are_down(
    gateway: Gateway,
    second_gateway: Gateway,
    fake: Fake,
    alice_key: str,
    http: httpx.Client,
    make_upstream: MakeUpstream,
) -> None:
    make_upstream(label="bad", token="bad-twin-token", priority=2)
    make_upstream(label="busy", token="busy-twin-token", priority=1)
    make_upstream(label="ok", token="ok-twin-token")
    # The first instance finds the bad one and disables it ...
    replies = [chat(gateway, alice_key, http=http)]
    # ... the second neither calls it again nor the busy one, once it has cooled it.
    replies += [chat(second_gateway, alice_key, http=http) for _ in range(4)]
    replies += [chat(gateway, alice_key, http=http) for _ in range(4)]
    assert [reply.status_code for reply in replies] == [200] * 9
    assert calls_with(fake, "Bearer bad-twin") == 1
    assert calls_with(fake, "Bearer busy-twi") == 1
    states = dict(Upstream.objects.values_list("label", "state"))
    assert states == {
        "bad": UpstreamState.DISABLED,
        "busy": UpstreamState.COOLING,
        "ok": UpstreamState.HEALTHY,
    }
    assert served_by(replies) == ["ok"] * 9


def test_an_unknown_model_is_asked_of_each_service_once(
    gateway: Gateway,
    fake: Fake,
    fake_openai: OpenAIFake,
    alice_key: str,
    make_upstream: MakeUpstream,
) -> None:
    make_upstream(label="puter-1", token="ok-puter-one-token", priority=1)
    make_upstream(label="puter-2", token="ok-puter-two-token", priority=1)
    openai_upstream(make_upstream, fake_openai, "vllm", "ok-vllm")
    reply = chat(gateway, alice_key, "no-such-model")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    # One Puter token answered for Puter; the other server was asked too, once.
    assert (fake.stats()["calls"], fake_openai.stats()["calls"]) == (1, 1)
    row = UsageLog.objects.get(request_id=reply.headers["x-request-id"])
    assert (row.status, row.http_status) == (UsageStatus.INVALID_REQUEST, 404)
    assert set(Upstream.objects.values_list("state", flat=True)) == {UpstreamState.HEALTHY}
