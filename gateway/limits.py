"""Key and user limits, checked in one step before any upstream call (DESIGN.md 7).

rpm and concurrency are counted at admission in the shared counters (Redis, or the
database); tpm and budgets compare against the ledger's rollups, which hold every finished
request (with Redis, against a copy of them kept beside the counters), so concurrent
requests overshoot a budget only by what was in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from django.db import DatabaseError, transaction

from accounts.db_thread import run_db_step
from accounts.keys import KeyFacts, KeyLimits
from accounts.spending import (
    Spending,
    SpendingOf,
    ask_spending,
    minute_seconds,
    with_minute,
)
from accounts.sql_batch import Reads, read_alone
from gateway import spending_copy
from gateway.counters import (
    Answer,
    Ask,
    CountersUnavailable,
    SlotAsk,
    SpentAsk,
    Window,
    WindowAsk,
    admit,
    forget,
    give_back,
    in_database,
    keep_taken_alive,
    new_holder,
)
from gateway.counters_db import ask_counters
from gateway.errors import OpenAIError

if TYPE_CHECKING:
    from gateway.pool import Reservation


@dataclass(slots=True)
class Grant:
    """An admitted request's rate-limit headers and the concurrency slot it holds."""

    headers: dict[str, str] = field(default_factory=dict)
    slot: tuple[str, str] | None = None


class LimitRefusal(Exception):
    def __init__(self, error: OpenAIError) -> None:
        super().__init__(error.message)
        self.error = error


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes it: `850ms`, `12s`, `1m3s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def ip_allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def _too_many(message: str, retry_after: float, headers: dict[str, str]) -> LimitRefusal:
    wait = str(max(math.ceil(retry_after), 1))
    return LimitRefusal(
        OpenAIError(
            429,
            message,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={**headers, "Retry-After": wait},
        )
    )


def _no_budget(whose: str, headers: dict[str, str]) -> LimitRefusal:
    return LimitRefusal(
        OpenAIError(
            429,
            f"The {whose} token budget is spent; it resets with its period.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    )


def limits_unavailable() -> LimitRefusal:
    return LimitRefusal(
        OpenAIError(
            503,
            "Limits cannot be checked right now; retry shortly.",
            type="api_error",
            code="limits_unavailable",
            headers={"Retry-After": "1"},
        )
    )


async def check_limits(
    key: KeyFacts, *, client_ip: str, now: dt.datetime, reservation: Reservation | None = None
) -> Grant:
    """Admit the request under every limit of the key and its user, or raise LimitRefusal.

    A `reservation` (the first upstream's account slot) is taken in the same step if that
    account has room.
    """
    limits = key.limits
    if limits.allowed_ips and not ip_allowed(client_ip, limits.allowed_ips):
        raise LimitRefusal(
            OpenAIError(
                403,
                "This key may not be used from your address.",
                type="permission_error",
                code="ip_not_allowed",
            )
        )
    grant = Grant()
    limited = _reads_tokens(limits) or limits.max_concurrency is not None or limits.rpm is not None
    if not limited and reservation is None:
        return grant
    ask = _ask(key, reservation)
    try:
        if in_database():
            answer = await _admit_in_database(key, now, grant, ask)
        else:
            answer = await _admit_in_redis(key, now, grant, ask)
    except LimitsUnreadable:
        if limited:
            raise limits_unavailable() from None  # never a free pass
        return grant  # only the account slot was asked for: acquire() takes it its own way
    if ask.slot is not None:
        grant.slot = (ask.slot.scope, ask.slot.holder)
    if reservation is not None:
        reservation.taken = answer.extra_taken
    return grant


class LimitsUnreadable(Exception):
    """The counters or the spending could not be read."""


def _ask(key: KeyFacts, reservation: Reservation | None) -> Ask:
    limits = key.limits
    slot = window = extra = None
    if limits.max_concurrency is not None:
        slot = SlotAsk(_slot_scope(key), limits.max_concurrency, new_holder())
    if limits.rpm is not None:
        window = WindowAsk(rpm_scope(key), limits.rpm)
    if reservation is not None:
        target = reservation.target
        extra = SlotAsk(reservation.scope, target.max_concurrency, reservation.holder)
    return Ask(slot, window, extra)


def _judge_counters(limits: KeyLimits, answer: Answer, grant: Grant) -> None:
    if not answer.slot_taken:
        raise _too_many_at_once(grant)
    if answer.window is not None:
        _judge_window(limits, answer.window, grant)


def _reads_tokens(limits: KeyLimits) -> bool:
    return limits.tpm is not None or _periods(limits) != (None, None)


def _periods(limits: KeyLimits) -> tuple[str | None, str | None]:
    key_period = limits.budget_period if limits.token_budget is not None else None
    user_period = limits.user_budget_period if limits.user_token_budget is not None else None
    return key_period, user_period


def _spending_of(key: KeyFacts) -> SpendingOf:
    key_period, user_period = _periods(key.limits)
    return SpendingOf(key.id, key.user_id, key_period, user_period, key.limits.tpm is not None)


def _judge_tokens(limits: KeyLimits, spent: Spending, grant: Grant) -> None:
    if limits.tpm is not None:
        grant.headers.update(
            {
                "x-ratelimit-limit-tokens": str(limits.tpm),
                "x-ratelimit-remaining-tokens": str(max(limits.tpm - spent.minute_tokens, 0)),
                "x-ratelimit-reset-tokens": reset_text(spent.minute_reset_after),
            }
        )
        if spent.minute_tokens >= limits.tpm:
            raise _too_many("Tokens per minute exceeded.", spent.minute_reset_after, grant.headers)
    if limits.token_budget is not None and spent.key_period_tokens >= limits.token_budget:
        raise _no_budget("key's", grant.headers)
    budget = limits.user_token_budget
    if budget is not None and spent.user_period_tokens >= budget:
        raise _no_budget("user's", grant.headers)


def _judge_window(limits: KeyLimits, window: Window, grant: Grant) -> None:
    assert limits.rpm is not None
    grant.headers.update(
        {
            "x-ratelimit-limit-requests": str(limits.rpm),
            "x-ratelimit-remaining-requests": str(max(limits.rpm - window.count, 0)),
            "x-ratelimit-reset-requests": reset_text(window.reset_after),
        }
    )
    if not window.admitted:
        raise _too_many("Requests per minute exceeded.", window.reset_after, grant.headers)


def _too_many_at_once(grant: Grant) -> LimitRefusal:
    return _too_many("Too many concurrent requests for this key.", 1, grant.headers)


# --- counters in the database: every limit in one transaction, one thread hop -----------


async def _admit_in_database(key: KeyFacts, now: dt.datetime, grant: Grant, ask: Ask) -> Answer:
    try:
        answer = await run_db_step(_admit_here, key, now, grant, ask)
    except DatabaseError:
        raise LimitsUnreadable() from None
    keep_taken_alive(ask, answer)  # committed
    return answer


def _admit_here(key: KeyFacts, now: dt.datetime, grant: Grant, ask: Ask) -> Answer:
    """Read the spending and the counts (one statement), take the slots, count the hit.

    A refusal rolls all of it back.
    """
    limits = key.limits
    with transaction.atomic():
        reads = Reads()
        spent = ask_spending(reads, _spending_of(key), now) if _reads_tokens(limits) else None
        counters = ask_counters(reads, ask, time.time())
        values = reads.values()
        if spent is not None:
            _judge_tokens(limits, spent.answer(values), grant)
        answer = counters.settle(values)
        _judge_counters(limits, answer, grant)
    return answer


# --- counters in Redis, with the copies of the spending: one script --------------------


async def _admit_in_redis(key: KeyFacts, now: dt.datetime, grant: Grant, ask: Ask) -> Answer:
    """The counters and the copies of the spending (gateway/spending_copy.py) in one Redis
    script; the rollups are read only when a copy is missing, which seeds it.

    A refusal gives back the slots the counters took. A request the spending refuses still
    counts in its rpm window here (the counters took it before the spending was judged).
    """
    if _reads_tokens(key.limits):
        ask = replace(ask, spent=spending_copy.ask(_spending_of(key), now))
    answer = await _counted(ask)
    try:
        if ask.spent is not None:
            spent = spending_copy.spending(ask.spent, answer.spent, now)
            if spent is None:
                spent = await _seeded(key, now, ask.spent)
            _judge_tokens(key.limits, spent, grant)
        _judge_counters(key.limits, answer, grant)
    except BaseException:
        # Refused, or cancelled: the slots go back first, so that a retry finds them free.
        await asyncio.shield(give_back(_taken(ask, answer)))
        raise
    return answer


async def _seeded(key: KeyFacts, now: dt.datetime, asked: SpentAsk) -> Spending:
    """The spending read from the rollups, stored as the copies that were missing."""
    try:
        spent, seconds = await run_db_step(_spending_and_seconds, key, now)
    except DatabaseError:
        raise LimitsUnreadable() from None
    await spending_copy.seed(asked, spent, seconds)
    return spent


def _spending_and_seconds(
    key: KeyFacts, now: dt.datetime
) -> tuple[Spending, list[tuple[int, int]]]:
    """The budget periods' tokens, and the minute's second by second (read once, for both
    the judgement and the seed)."""
    of = _spending_of(key)
    spent = read_alone(lambda reads: ask_spending(reads, replace(of, minute=False), now))
    if not of.minute:
        return spent, []
    seconds = minute_seconds(key.id, now)
    return with_minute(spent, seconds, now), seconds


def _taken(ask: Ask, answer: Answer) -> list[tuple[str, str]]:
    """The slots the counters hold for this ask, as (scope, holder)."""
    return [
        (slot.scope, slot.holder)
        for slot, held in ((ask.slot, answer.holds_slot), (ask.extra, answer.extra_taken))
        if slot is not None and held
    ]


async def _counted(ask: Ask) -> Answer:
    try:
        return await admit(ask)
    except CountersUnavailable:
        raise LimitsUnreadable() from None


def _slot_scope(key: KeyFacts) -> str:
    return f"key:{key.id}"


def rpm_scope(key: KeyFacts) -> str:
    return f"rpm:{key.id}"


def hand_over(grant: Grant) -> tuple[str, str] | None:
    """The slot as (scope, holder), for the caller to give back; the grant holds none now."""
    slot, grant.slot = grant.slot, None
    if slot is not None:
        forget(slot[1])
    return slot
