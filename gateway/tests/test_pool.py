"""The pool without HTTP: smooth weights, tiers, account slots, the queue and health marks."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
import time
from collections import Counter
from itertools import groupby

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone

from gateway import pool
from gateway.admission import Route
from gateway.counters import CountersUnavailable, release_slot, take_slot
from gateway.errors import OpenAIError
from gateway.models import Upstream, UpstreamState
from gateway.pool import (
    LIMIT_FAILURES,
    SmoothWeights,
    acquire,
    cooldown_for,
    load_entries,
    record_failure,
    record_success,
    slot_scope,
)
from gateway.providers import registry
from gateway.providers.base import FailureKind, UpstreamFailure, UpstreamTarget
from gateway.providers.openai import OpenAIProvider
from gateway.relay import failover_routes
from gateway.upstreams import add_upstream
from gateway.usage import UsageMeter

# Account names of this run only: the Redis of the services pass may be shared.
RUN = secrets.token_hex(4)


def target(
    id: int, weight: int = 1, *, priority: int = 0, account: str = "", cap: int = 3
) -> UpstreamTarget:
    return UpstreamTarget(
        id=id,
        label=f"u{id}",
        provider="puter",
        base_url="",
        token=f"tok-{id}",
        account=f"{RUN}-{account or id}",
        weight=weight,
        max_concurrency=cap,
        priority=priority,
        models=(),
    )


def picks(weights: SmoothWeights, tier: list[UpstreamTarget], n: int) -> list[int]:
    chosen = []
    for _ in range(n):
        first = weights.order(tier)[0]
        weights.charge(first, tier)
        chosen.append(first.id)
    return chosen


def test_weights_1_2_7_share_10000_picks_as_10_20_70_percent_without_long_runs() -> None:
    tier = [target(1, 1), target(2, 2), target(3, 7)]
    chosen = picks(SmoothWeights(), tier, 10_000)
    shares = Counter(chosen)
    for t in tier:
        assert abs(shares[t.id] / 10_000 - t.weight / 10) <= 0.02
    # A "long run" is one upstream chosen more times in a row than its weight forces: an
    # upstream of weight w out of W must run at least ceil(w / (W - w)) times somewhere,
    # and no more is needed. Weighted random order ran a weight-7 upstream 37 times.
    longest = {key: max(len(list(run)) for k, run in groupby(chosen) if k == key) for key in shares}
    assert longest == {t.id: math.ceil(t.weight / (10 - t.weight)) for t in tier}
    # Every 20-request window holds each upstream within one of its share (2, 4 and 14).
    for start in range(0, 10_000 - 20 + 1):
        window = Counter(chosen[start : start + 20])
        for t in tier:
            assert abs(window[t.id] - 2 * t.weight) <= 1, (start, window)


def test_a_refunded_pick_leaves_the_order_as_it_was() -> None:
    tier = [target(1, 1), target(2, 2), target(3, 7)]
    weights, untouched = SmoothWeights(), SmoothWeights()
    picks(weights, tier, 7)
    picks(untouched, tier, 7)
    weights.charge(tier[0], tier)
    weights.refund(tier[0], tier)
    assert picks(weights, tier, 50) == picks(untouched, tier, 50)


def test_higher_priority_comes_first_whatever_the_weights() -> None:
    low, high = target(1, 100, priority=0), target(2, 1, priority=5)
    assert pool.order_candidates([low, high]) == [high, low]


@pytest.mark.django_db(transaction=True)
def test_a_full_upstream_is_routed_around_and_a_lower_tier_used_only_when_the_top_is_full() -> None:
    top, other, low = target(11, priority=1, cap=1), target(12, priority=1, cap=1), target(13)

    async def run() -> list[int]:
        got = []
        held = [await acquire([top, other, low], deadline=time.monotonic() + 1) for _ in range(3)]
        got += [lease.target.id for lease in held]
        await held[0].release()
        again = await acquire([top, other, low], deadline=time.monotonic() + 1)
        got.append(again.target.id)
        for lease in [again, *held[1:]]:
            await lease.release()
        return got

    got = asyncio.run(run())
    assert sorted(got[:2]) == [11, 12]
    assert got[2] == 13
    assert got[3] == got[0]


@pytest.mark.django_db(transaction=True)
def test_tokens_of_one_account_share_its_cap() -> None:
    first, second = target(21, account="shared", cap=2), target(22, account="shared", cap=2)

    async def run() -> int:
        holders = [await take_slot(slot_scope(first), 2), await take_slot(slot_scope(second), 2)]
        try:
            return len([h for h in holders if h]) + bool(await take_slot(slot_scope(first), 2))
        finally:
            for holder in holders:
                if holder:
                    await release_slot(slot_scope(first), holder)

    assert asyncio.run(run()) == 2


@pytest.mark.django_db(transaction=True)
def test_a_request_waits_for_a_free_slot_and_gets_upstream_busy_after_the_queue_timeout() -> None:
    only = target(31, cap=1)

    async def run() -> tuple[float, float, str]:
        lease = await acquire([only], deadline=time.monotonic() + 1)
        waiter = asyncio.ensure_future(acquire([only], deadline=time.monotonic() + 5))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        await lease.release()
        second = await waiter
        waited = time.monotonic() - started
        started = time.monotonic()
        try:
            await acquire([only], deadline=time.monotonic() + 0.3)
        except OpenAIError as error:
            code = str(error.code)
        await second.release()
        return waited, time.monotonic() - started, code

    waited, gave_up_after, code = asyncio.run(run())
    assert 0.3 <= waited < 1.0
    assert 0.2 <= gave_up_after < 0.6
    assert code == "upstream_busy"


def test_without_shared_counters_the_cap_holds_in_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unavailable(scope: str, limit: int) -> str | None:
        raise CountersUnavailable("redis is gone")

    monkeypatch.setattr(pool, "take_slot", unavailable)
    only = target(41, cap=2)

    async def run() -> list[int | None]:
        leases = [await pool._take_first_free([only]) for _ in range(3)]
        ids = [lease.target.id if lease else None for lease in leases]
        for lease in leases:
            if lease is not None:
                await lease.release()
        after = await pool._take_first_free([only])
        ids.append(after.target.id if after else None)
        return ids

    assert asyncio.run(run()) == [41, 41, None, 41]


# --- health ----------------------------------------------------------------------------


def failure(kind: FailureKind, retry_after: float | None = None) -> UpstreamFailure:
    return UpstreamFailure(kind, f"{kind.value} happened", status=500, retry_after=retry_after)


@override_settings(UPSTREAM_FAILURES_TO_COOL=3, UPSTREAM_COOLDOWN=30.0)
def test_cooldowns_follow_the_failure_kind() -> None:
    assert cooldown_for(failure(FailureKind.QUOTA), 1) == 3600
    assert cooldown_for(failure(FailureKind.RATE_LIMITED, 2.0), 1) == 2.0
    assert [cooldown_for(failure(FailureKind.RATE_LIMITED), n) for n in range(1, 8)] == [
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
    assert [cooldown_for(failure(FailureKind.SERVER), n) for n in (1, 2, 3, 4)] == [
        None,
        None,
        30,
        30,
    ]
    assert cooldown_for(failure(FailureKind.TIMEOUT), 3) == 30


@pytest.fixture
def upstream(db: None) -> Upstream:
    row = Upstream(label="u", account="acct")
    row.token = "tok"
    row.save()
    return row


def test_an_auth_failure_disables_with_its_reason_and_time(upstream: Upstream) -> None:
    before = timezone.now()
    record_failure(upstream.pk, failure(FailureKind.AUTH))
    upstream.refresh_from_db()
    assert upstream.state == UpstreamState.DISABLED
    assert (upstream.last_failure, upstream.last_error) == ("auth", "auth happened")
    assert upstream.last_error_at is not None
    assert upstream.last_error_at >= before
    assert upstream.cooldown_until is None


def test_a_rate_limit_cools_for_its_retry_after(upstream: Upstream) -> None:
    record_failure(upstream.pk, failure(FailureKind.RATE_LIMITED, 2.0))
    upstream.refresh_from_db()
    assert upstream.state == UpstreamState.COOLING
    assert upstream.last_error_at is not None
    assert upstream.cooldown_until == upstream.last_error_at + dt.timedelta(seconds=2)


@override_settings(UPSTREAM_FAILURES_TO_COOL=3, UPSTREAM_COOLDOWN=30.0)
def test_server_failures_cool_after_n_in_a_row_and_a_success_resets_the_count(
    upstream: Upstream,
) -> None:
    for _ in range(2):
        record_failure(upstream.pk, failure(FailureKind.SERVER))
    upstream.refresh_from_db()
    assert (upstream.state, upstream.consecutive_failures) == (UpstreamState.HEALTHY, 2)
    record_success(upstream.pk)
    for _ in range(3):
        record_failure(upstream.pk, failure(FailureKind.SERVER))
    upstream.refresh_from_db()
    assert (upstream.state, upstream.consecutive_failures) == (UpstreamState.COOLING, 3)
    assert upstream.last_error_at is not None
    assert upstream.cooldown_until == upstream.last_error_at + dt.timedelta(seconds=30)


def test_clients_faults_leave_the_upstream_alone(upstream: Upstream) -> None:
    for kind in (FailureKind.BAD_REQUEST, FailureKind.MODEL_NOT_FOUND, FailureKind.FORBIDDEN_MODEL):
        record_failure(upstream.pk, failure(kind))
    upstream.refresh_from_db()
    assert (upstream.state, upstream.consecutive_failures, upstream.last_error) == (
        UpstreamState.HEALTHY,
        0,
        "",
    )


@pytest.mark.parametrize("kind", LIMIT_FAILURES)
def test_a_success_that_proves_no_limits_ends_no_limit_cooling(
    upstream: Upstream, kind: str
) -> None:
    record_failure(upstream.pk, failure(FailureKind(kind)))
    assert record_success(upstream.pk, proves_limits=False) is False
    upstream.refresh_from_db()
    assert upstream.state == UpstreamState.COOLING
    assert record_success(upstream.pk) is True
    upstream.refresh_from_db()
    assert (upstream.state, upstream.cooldown_until) == (UpstreamState.HEALTHY, None)


def test_the_smallest_cap_of_an_accounts_tokens_holds_for_all_of_them(db: None) -> None:
    for label, cap in (("a", 5), ("b", 2), ("c", 4)):
        row = Upstream(label=label, account="shared" if label != "c" else "", max_concurrency=cap)
        row.token = "tok"
        row.save()
    caps = {entry.target.label: entry.target.max_concurrency for entry in load_entries()}
    assert caps == {"a": 2, "b": 2, "c": 4}


def test_a_third_provider_is_one_module_and_one_registry_entry(
    monkeypatch: pytest.MonkeyPatch, db: None
) -> None:
    plugin = registry.Plugin(OpenAIProvider(), "Echo", needs_base_url=True)
    monkeypatch.setitem(registry._plugins, "echo", plugin)
    upstream = add_upstream(label="e", token="tok", provider="echo", base_url="http://echo.test")
    assert registry.provider_for(pool.entry_of(upstream).target) is plugin.provider
    assert ("echo", "Echo") in list(Upstream._meta.get_field("provider").choices or [])
    with pytest.raises(ValidationError) as caught:
        add_upstream(label="f", token="tok", provider="echo")
    assert caught.value.message_dict == {"base_url": ["An Echo upstream needs a base URL."]}


@pytest.mark.django_db(transaction=True)
@override_settings(UPSTREAM_READ_TIMEOUT=0.5)
def test_a_request_admitted_after_the_read_timeout_still_gets_its_first_try() -> None:
    # On a loaded machine admission can outlast a short read timeout; the deadline is for
    # further tries only, or the call would be refused without any.
    only = target(41)
    meter = UsageMeter(
        request_id="late",
        key_id=0,
        user_id=0,
        key_prefix="sk-late",
        endpoint="chat",
        model="gpt-4o-mini",
        stream=False,
    )
    meter.started -= 2
    tried: list[int] = []

    async def call(upstream: UpstreamTarget, model: str) -> str:
        tried.append(upstream.id)
        return "answer"

    assert asyncio.run(failover_routes(meter, [Route("gpt-4o-mini", [only])], call)) == "answer"
    assert tried == [41]
