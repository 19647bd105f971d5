"""Per-key and per-user limits on one gateway: refusals, headers, rows, rotation, periods."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.keys import facts_of, rotate_key
from accounts.models import ApiKey, UsageDaily, UsageLog, UsageStatus, UserLimits
from gateway.limits import LimitRefusal, check_limits, reset_text
from gateway.models import Upstream
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

CHAT: dict[str, object] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def call(gateway: Gateway, key: str, body: dict[str, object] = CHAT) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_reset_durations_are_written_as_openai_writes_them() -> None:
    assert [reset_text(s) for s in (0.85, 12, 63, 0.0001)] == ["850ms", "12s", "1m3s", "1ms"]


@pytest.mark.usefixtures("upstream", "fake")
def test_rpm_refuses_the_request_past_the_limit_with_headers_and_a_row(
    gateway: Gateway, make_key: Callable[..., str]
) -> None:
    key = make_key("rita", rpm=3)
    replies = [call(gateway, key) for _ in range(4)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["2", "1", "0", "0"]
    assert {r.headers["x-ratelimit-limit-requests"] for r in replies} == {"3"}
    refused = replies[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    statuses = sorted(UsageLog.objects.values_list("status", flat=True))
    assert statuses == ["ok", "ok", "ok", "rejected"]
    rejected = UsageLog.objects.get(status=UsageStatus.REJECTED)
    assert (rejected.http_status, rejected.total_tokens) == (429, 0)
    report = httpx.get(gateway.v1 + "/key", headers={"Authorization": f"Bearer {key}"}).json()
    assert report["remaining"]["requests_this_minute"] == 0


@pytest.mark.usefixtures("upstream")
def test_concurrency_limit_refuses_a_second_stream_while_the_first_runs(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str]
) -> None:
    key = make_key("carl", max_concurrency=1)
    started = threading.Event()
    results: list[int] = []

    def slow_stream() -> None:
        body = {**CHAT, "model": "gpt-4o-mini+pace100+chunks10", "stream": True}
        with httpx.stream(
            "POST", gateway.v1 + "/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}, timeout=10,
        ) as reply:  # fmt: skip
            started.set()
            results.append(reply.status_code)
            reply.read()

    thread = threading.Thread(target=slow_stream)
    thread.start()
    assert started.wait(5)
    second = call(gateway, key)
    thread.join(10)
    third = call(gateway, key)
    assert results == [200]
    assert second.status_code == 429
    assert second.json()["error"]["message"] == "Too many concurrent requests for this key."
    assert third.status_code == 200


@pytest.mark.usefixtures("upstream", "fake")
def test_tpm_and_budgets_refuse_once_spent(gateway: Gateway, make_key: Callable[..., str]) -> None:
    tpm_key = make_key("tina", tpm=5)
    assert call(gateway, tpm_key).status_code == 200
    refused = call(gateway, tpm_key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-tokens"] == "5"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    budget_key = make_key("bob", token_budget=10, budget_period="day")
    assert call(gateway, budget_key).status_code == 200
    spent = call(gateway, budget_key)
    assert spent.status_code == 429
    assert spent.json()["error"]["type"] == "insufficient_quota"
    assert spent.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.usefixtures("fake")
def test_a_refused_request_gives_back_the_slots_it_was_counted_in(
    gateway: Gateway, make_key: Callable[..., str], make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(max_concurrency=1)  # one slot of the account: a kept one would stop all
    spent = make_key("sam", token_budget=10, budget_period="day", max_concurrency=1)
    assert call(gateway, spent).status_code == 200
    for _ in range(3):
        assert call(gateway, spent).json()["error"]["code"] == "insufficient_quota"
    other = make_key("tom")
    assert [call(gateway, other).status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.usefixtures("upstream", "fake")
def test_a_users_budget_spans_all_of_their_keys(
    gateway: Gateway, make_key: Callable[..., str]
) -> None:
    first, second = make_key("uma"), make_key("uma")
    UserLimits.objects.create(
        user=User.objects.get(username="uma"), token_budget=10, budget_period="month"
    )
    assert call(gateway, first).status_code == 200
    refused = call(gateway, second)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith("The user's token budget is spent")


@pytest.mark.usefixtures("upstream", "fake")
def test_ip_and_model_allow_lists_refuse_with_403(
    gateway: Gateway, make_key: Callable[..., str]
) -> None:
    outside = make_key("ivy", allowed_ips=("10.0.0.0/8",))
    inside = make_key("ivy", allowed_ips=("127.0.0.0/8", "::1/128"))
    models = make_key("ivy", allowed_models=("gpt-5-nano",))
    refused = call(gateway, outside)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    assert refused.json()["error"]["type"] == "permission_error"
    assert call(gateway, inside).status_code == 200
    wrong_model = call(gateway, models)
    assert wrong_model.status_code == 403
    assert wrong_model.json()["error"]["code"] == "model_not_allowed"
    assert UsageLog.objects.filter(status=UsageStatus.REJECTED, http_status=403).count() == 2


@pytest.mark.usefixtures("upstream", "fake")
def test_rotation_keeps_the_old_secret_for_its_grace_period_then_refuses_it(
    gateway: Gateway, make_key: Callable[..., str]
) -> None:
    old = make_key("rob")
    key, new = rotate_key(prefix=old[:11], grace_minutes=10)
    assert new[:11] == old[:11]
    assert call(gateway, old).status_code == 200
    assert call(gateway, new).status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(
        previous_valid_until=timezone.now() - dt.timedelta(seconds=1)
    )
    expired = call(gateway, old)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "invalid_api_key"
    assert call(gateway, new).status_code == 200
    rows = UsageLog.objects.all()
    assert {row.key_id for row in rows} == {key.pk}
    assert rows.count() == 3


def test_a_daily_budget_refused_at_2359_admits_at_midnight(
    make_key: Callable[..., str], upstream: Upstream
) -> None:
    raw = make_key("dana", token_budget=100, budget_period="day")
    key = ApiKey.objects.get(prefix=raw[:11])
    day = dt.date(2026, 11, 26)
    UsageDaily.objects.create(
        day=day, key=key, user=key.user, model="gpt-4o-mini", requests=3, total_tokens=100
    )
    facts = facts_of(key)
    before_midnight = dt.datetime(2026, 11, 26, 23, 59, tzinfo=dt.UTC)
    midnight = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)
    with pytest.raises(LimitRefusal) as refused:
        asyncio.run(check_limits(facts, client_ip="127.0.0.1", now=before_midnight))
    assert refused.value.error.code == "insufficient_quota"
    grant = asyncio.run(check_limits(facts, client_ip="127.0.0.1", now=midnight))
    assert grant.slot is None


@pytest.mark.usefixtures("upstream", "fake")
def test_key_report_remaining_matches_what_admission_enforces(
    gateway: Gateway, make_key: Callable[..., str]
) -> None:
    key = make_key("kate", rpm=5, tpm=1000)
    replies = [call(gateway, key) for _ in range(2)]
    report = httpx.get(gateway.v1 + "/key", headers={"Authorization": f"Bearer {key}"}).json()
    remaining = report["remaining"]
    assert remaining["requests_this_minute"] == int(
        replies[-1].headers["x-ratelimit-remaining-requests"]
    )
    assert remaining["requests_this_minute"] == 3
    spent = sum(row.total_tokens for row in UsageLog.objects.all())
    assert remaining["tokens_this_minute"] == 1000 - spent
    third = call(gateway, key)
    assert third.headers["x-ratelimit-remaining-tokens"] == str(1000 - spent)
    assert third.headers["x-ratelimit-remaining-requests"] == "2"
