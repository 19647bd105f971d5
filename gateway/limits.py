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
from dataclasses import dataclass, field

from django.db import DatabaseError

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts
from accounts.usage_queries import Spending, spending
from gateway.counters import CountersUnavailable, hit, release_slot, take_slot
from gateway.errors import OpenAIError


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


async def check_limits(key: KeyFacts, *, client_ip: str, now: dt.datetime) -> Grant:
    """Admit the request under every limit of the key and its user, or raise LimitRefusal."""
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
    try:
        await _check_tokens(key, now, grant)
        await _take_requests(key, grant)
    except CountersUnavailable:
        raise limits_unavailable() from None
    return grant


async def _check_tokens(key: KeyFacts, now: dt.datetime, grant: Grant) -> None:
    limits = key.limits
    key_period = limits.budget_period if limits.token_budget is not None else None
    user_period = limits.user_budget_period if limits.user_token_budget is not None else None
    if key_period is None and user_period is None and limits.tpm is None:
        return
    try:
        spent: Spending = await run_in_db_thread(
            spending,
            key_id=key.id,
            user_id=key.user_id,
            key_period=key_period,
            user_period=user_period,
            minute=limits.tpm is not None,
            now=now,
        )
    except DatabaseError:
        raise limits_unavailable() from None  # never a free pass
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


async def _take_requests(key: KeyFacts, grant: Grant) -> None:
    limits = key.limits
    if limits.max_concurrency is not None:
        scope = f"key:{key.id}"
        holder = await take_slot(scope, limits.max_concurrency)
        if holder is None:
            raise _too_many("Too many concurrent requests for this key.", 1, grant.headers)
        grant.slot = (scope, holder)
    if limits.rpm is None:
        return
    try:
        window = await hit(f"rpm:{key.id}", limits.rpm)
    except BaseException:
        await release(grant)
        raise
    grant.headers.update(
        {
            "x-ratelimit-limit-requests": str(limits.rpm),
            "x-ratelimit-remaining-requests": str(max(limits.rpm - window.count, 0)),
            "x-ratelimit-reset-requests": reset_text(window.reset_after),
        }
    )
    if not window.admitted:
        await release(grant)
        raise _too_many("Requests per minute exceeded.", window.reset_after, grant.headers)


async def release(grant: Grant) -> None:
    """Give back the concurrency slot; an expired one is harmless."""
    if grant.slot is None:
        return
    scope, holder = grant.slot
    grant.slot = None
    with contextlib.suppress(CountersUnavailable):  # an unreleased slot expires by itself
        await release_slot(scope, holder)
