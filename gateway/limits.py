"""Key and user limits, checked in one step before any upstream call (DESIGN.md 7).

rpm and concurrency are counted at admission in the shared counters (Redis, or the
database); tpm and budgets are read from the ledger's rollups, which hold every finished
request, so concurrent requests overshoot a budget only by what was in flight.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import DatabaseError, transaction

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts, KeyLimits
from accounts.spending import Spending, spending
from gateway.counters import (
    CountersUnavailable,
    Window,
    forget,
    hit,
    in_database,
    keep_alive,
    new_holder,
    release_slot,
    take_slot,
)
from gateway.counters_db import hit_here, take_slot_here
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

    A `reservation` (counters in the database) is taken in the same step if there is room.
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
    try:
        if in_database():
            await _admit_in_database(key, now, grant, reservation)
        else:
            await _check_tokens(key, now, grant)
            await _take_requests(key, grant)
    except CountersUnavailable:
        raise limits_unavailable() from None
    return grant


def _reads_tokens(limits: KeyLimits) -> bool:
    return limits.tpm is not None or _periods(limits) != (None, None)


def _periods(limits: KeyLimits) -> tuple[str | None, str | None]:
    key_period = limits.budget_period if limits.token_budget is not None else None
    user_period = limits.user_budget_period if limits.user_token_budget is not None else None
    return key_period, user_period


def _spending(key: KeyFacts, now: dt.datetime) -> Spending:
    key_period, user_period = _periods(key.limits)
    return spending(
        key_id=key.id,
        user_id=key.user_id,
        key_period=key_period,
        user_period=user_period,
        minute=key.limits.tpm is not None,
        now=now,
    )


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


async def _admit_in_database(
    key: KeyFacts, now: dt.datetime, grant: Grant, reservation: Reservation | None
) -> None:
    holder = new_holder() if key.limits.max_concurrency is not None else None
    try:
        await run_in_db_thread(_admit_here, key, now, grant, holder, reservation)
    except DatabaseError:
        raise limits_unavailable() from None  # never a free pass
    if holder is not None:
        grant.slot = (_slot_scope(key), holder)
        keep_alive(*grant.slot)


def _admit_here(
    key: KeyFacts,
    now: dt.datetime,
    grant: Grant,
    holder: str | None,
    reservation: Reservation | None,
) -> None:
    """Read the spending, take the slot and count the hit; a refusal rolls all back.

    Then take the reserved account slot if its account has room (else `acquire` waits).
    """
    limits = key.limits
    taken = False
    with transaction.atomic():
        if _reads_tokens(limits):
            _judge_tokens(limits, _spending(key, now), grant)
        if holder is not None:
            assert limits.max_concurrency is not None
            if not take_slot_here(_slot_scope(key), limits.max_concurrency, holder, time.time()):
                raise _too_many_at_once(grant)
        if limits.rpm is not None:
            window = hit_here(rpm_scope(key), limits.rpm, 60.0, time.time())
            _judge_window(limits, window, grant)
        if reservation is not None:
            cap = reservation.target.max_concurrency
            taken = take_slot_here(reservation.scope, cap, reservation.holder, time.time())
    if reservation is not None:
        reservation.taken = taken  # only once committed


# --- counters in Redis: the tokens from the database, the counters from Redis ------------


async def _check_tokens(key: KeyFacts, now: dt.datetime, grant: Grant) -> None:
    if not _reads_tokens(key.limits):
        return
    try:
        spent = await run_in_db_thread(_spending, key, now)
    except DatabaseError:
        raise limits_unavailable() from None  # never a free pass
    _judge_tokens(key.limits, spent, grant)


async def _take_requests(key: KeyFacts, grant: Grant) -> None:
    limits = key.limits
    if limits.max_concurrency is not None:
        scope = _slot_scope(key)
        holder = await take_slot(scope, limits.max_concurrency)
        if holder is None:
            raise _too_many_at_once(grant)
        grant.slot = (scope, holder)
    if limits.rpm is None:
        return
    try:
        _judge_window(limits, await hit(rpm_scope(key), limits.rpm), grant)
    except BaseException:
        await release(grant)
        raise


def _slot_scope(key: KeyFacts) -> str:
    return f"key:{key.id}"


def rpm_scope(key: KeyFacts) -> str:
    return f"rpm:{key.id}"


def hand_to_row(grant: Grant) -> str | None:
    """The slot's holder, to be given back in the request row's database step.

    Only with the counters in the database; the grant holds no slot from now.
    """
    if grant.slot is None or not in_database():
        return None
    holder = grant.slot[1]
    grant.slot = None
    forget(holder)
    return holder


async def release(grant: Grant) -> None:
    """Give back the concurrency slot; an expired one is harmless."""
    if grant.slot is None:
        return
    scope, holder = grant.slot
    grant.slot = None
    with contextlib.suppress(CountersUnavailable):  # an unreleased slot expires by itself
        await release_slot(scope, holder)
