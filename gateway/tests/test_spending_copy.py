"""With the counters in Redis: the copy of the token spending that admission reads with
them, and what the row writer settles there once rows are written."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from accounts.keys import KeyFacts, KeyLimits, facts_of, issue_key
from accounts.models import ApiKey, KeyTokensSecond, UsageDaily, UsageStatus, UserLimits
from accounts.spending import Spending, SpendingOf
from gateway import counters, limits, spending_copy
from gateway.counters import Ask, Spent
from gateway.counters_redis import COPY_TTL, RedisStore
from gateway.limits import Grant, LimitRefusal, check_limits
from gateway.providers.base import Usage
from gateway.row_writer import write_row
from gateway.testing.live_servers import redis_answers
from gateway.usage import Outcome, Row, UsageMeter, usage_row

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not redis_answers(), reason="Redis does not answer on 127.0.0.1:6379"),
]

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[redis.Redis, str]]:
    """Counters (and copies) in Redis under a prefix of this test's own: (client, prefix)."""
    prefix = f"test-copy-{secrets.token_hex(4)}"
    monkeypatch.setattr(counters, "_store", None)
    with override_settings(REDIS_URL=URL, REDIS_KEY_PREFIX=prefix):
        client = redis.Redis.from_url(URL, decode_responses=True)
        yield client, f"{prefix}:c:spent:"
        for name in client.scan_iter(f"{prefix}:*"):
            client.delete(name)
        client.close()
    monkeypatch.setattr(counters, "_store", None)


@pytest.fixture
def rollup_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The key ids whose spending admission read from the rollups."""
    reads: list[int] = []
    real = limits._spending_and_seconds

    def counted(key: KeyFacts, now: dt.datetime) -> Any:
        reads.append(key.id)
        return real(key, now)

    monkeypatch.setattr(limits, "_spending_and_seconds", counted)
    return reads


def _key(**limits_: Any) -> KeyFacts:
    user, _ = User.objects.get_or_create(username="cora")
    key, _raw = issue_key(user=user, name="c", limits=KeyLimits(**limits_))
    return facts_of(key)


def _admit(key: KeyFacts, now: dt.datetime | None = None) -> Grant:
    return asyncio.run(check_limits(key, client_ip="127.0.0.1", now=now or timezone.now()))


def _row(key: KeyFacts, tokens: int, held: Sequence[tuple[str, str] | None] = ()) -> Row:
    meter = UsageMeter(
        request_id=f"req-{secrets.token_hex(4)}",
        key_id=key.id,
        user_id=key.user_id,
        key_prefix=key.prefix,
        endpoint="chat.completions",
        model="gpt-4o-mini",
        stream=False,
    )
    outcome = Outcome(UsageStatus.OK, 200, Usage(tokens - 1, 1))
    return usage_row(meter, outcome, held=[slot for slot in held if slot is not None])


def _write(key: KeyFacts, tokens: int, held: Sequence[tuple[str, str] | None] = ()) -> None:
    asyncio.run(write_row(_row(key, tokens, held)))


def test_admission_seeds_missing_copies_then_reads_them_with_rows_added(
    copies: tuple[redis.Redis, str], rollup_reads: list[int]
) -> None:
    client, spent = copies
    key = _key(tpm=1000, token_budget=500, budget_period="day")
    UserLimits.objects.create(user_id=key.user_id, token_budget=800, budget_period="month")
    now = timezone.now()
    UsageDaily.objects.create(
        day=now.date(), key_id=key.id, user_id=key.user_id, model="m", total_tokens=30
    )
    KeyTokensSecond.objects.create(key_id=key.id, second=math.floor(now.timestamp()) - 5, tokens=30)
    key = facts_of(ApiKey.objects.get(pk=key.id))  # with the user's budget

    first = _admit(key, now)
    assert first.headers["x-ratelimit-remaining-tokens"] == "970"
    assert rollup_reads == [key.id]
    day, month = now.date().isoformat(), now.date().replace(day=1).isoformat()
    assert client.hget(f"{spent}key:{key.id}:{day}", "t") == "30"
    assert client.hget(f"{spent}user:{key.user_id}:{month}", "t") == "30"

    _write(key, 25)
    assert client.hget(f"{spent}key:{key.id}:{day}", "t") == "55"
    assert client.hget(f"{spent}user:{key.user_id}:{month}", "t") == "55"
    second = _admit(key)
    assert second.headers["x-ratelimit-remaining-tokens"] == "945"
    assert rollup_reads == [key.id]  # read from the copies alone


def test_rows_of_a_key_with_no_copy_leave_none_and_the_seed_counts_them_once(
    copies: tuple[redis.Redis, str], rollup_reads: list[int]
) -> None:
    client, spent = copies
    key = _key(token_budget=100, budget_period="none")
    _write(key, 40)
    assert list(client.scan_iter(f"{spent}*")) == []
    _admit(key)
    assert client.hget(f"{spent}key:{key.id}:1970-01-01", "t") == "40"
    _write(key, 60)
    with pytest.raises(LimitRefusal) as refused:
        _admit(key)
    assert refused.value.error.code == "insufficient_quota"
    assert rollup_reads == [key.id]


def test_copies_expire_so_that_the_rollups_are_read_again(
    copies: tuple[redis.Redis, str], rollup_reads: list[int]
) -> None:
    client, spent = copies
    key = _key(tpm=100, token_budget=100, budget_period="month")
    _admit(key)
    names = list(client.scan_iter(f"{spent}*"))
    assert len(names) == 2  # the key's month and its seconds
    assert all(0 < client.ttl(name) <= COPY_TTL for name in names)
    _write(key, 10)
    assert all(0 < client.ttl(name) <= COPY_TTL for name in names)  # counting keeps expiry
    for name in names:
        client.delete(name)  # as when they expire
    UsageDaily.objects.filter(key_id=key.id).update(total_tokens=100)  # an operator's fix
    with pytest.raises(LimitRefusal):
        _admit(key)
    assert rollup_reads == [key.id, key.id]


def test_the_minutes_copy_lets_tokens_go_after_a_minute(
    copies: tuple[redis.Redis, str], rollup_reads: list[int]
) -> None:
    key = _key(tpm=50)
    now = timezone.now()
    _admit(key, now)
    _write(key, 50)
    with pytest.raises(LimitRefusal) as refused:
        _admit(key, now + dt.timedelta(seconds=1))
    assert refused.value.error.headers["x-ratelimit-remaining-tokens"] == "0"
    later = _admit(key, now + dt.timedelta(seconds=62))
    assert later.headers["x-ratelimit-remaining-tokens"] == "50"
    assert rollup_reads == [key.id]


def test_a_rows_slots_go_back_with_it(copies: tuple[redis.Redis, str]) -> None:
    key = _key(max_concurrency=1)
    grant = _admit(key)
    assert grant.slot is not None
    with pytest.raises(LimitRefusal) as refused:
        _admit(key)
    assert refused.value.error.message == "Too many concurrent requests for this key."
    _write(key, 5, held=[limits.hand_over(grant)])
    assert _admit(key).slot is not None


def test_a_row_committed_while_its_copy_is_seeded_is_counted_once(
    copies: tuple[redis.Redis, str],
) -> None:
    key = _key(token_budget=1000, budget_period="month")
    now = timezone.now()
    asked = spending_copy.ask(SpendingOf(key.id, key.user_id, "month", None, minute=False), now)
    store = counters.store()
    assert isinstance(store, RedisStore)

    async def run() -> tuple[Spent | None, Spent | None]:
        first = await store.admit(Ask(spent=asked), now.timestamp())
        # The rollups read for the seed held 100 tokens; a row of 25 is committed after
        # that read and counted before the seed is stored.
        await store.ended([], *spending_copy.increments([_row(key, 25).entry]))
        await spending_copy.seed(asked, Spending(100, 0, 0, 0.0), [])
        again = await store.admit(Ask(spent=asked), now.timestamp())
        return first.spent, again.spent

    first, again = asyncio.run(run())
    assert first is not None
    assert first.key_period is None  # started, not seeded yet
    assert again is not None
    assert again.key_period == 125
