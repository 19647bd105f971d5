"""Read-side questions about usage, answered from the daily rollup where possible."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Sum
from django.db.models.functions import Coalesce

from accounts.models import ApiKey, UsageDaily
from accounts.spending import SpendingOf, ask_spending, period_bounds
from accounts.sql_batch import read_alone


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def key_totals(key_id: int, *, since: dt.date | None = None) -> Totals:
    rows = UsageDaily.objects.filter(key_id=key_id)
    if since is not None:
        rows = rows.filter(day__gte=since)
    sums = rows.aggregate(
        requests=Coalesce(Sum("requests"), 0),
        prompt=Coalesce(Sum("prompt_tokens"), 0),
        completion=Coalesce(Sum("completion_tokens"), 0),
        total=Coalesce(Sum("total_tokens"), 0),
    )
    return Totals(sums["requests"], sums["prompt"], sums["completion"], sums["total"])


def key_report(key_id: int, now: dt.datetime, *, requests_minute: int) -> dict[str, object]:
    """What `GET /v1/key` answers (DESIGN.md section 5).

    `requests_minute` comes from the same counter admission uses; tokens from the ledger.
    """
    key = ApiKey.objects.get(pk=key_id)
    totals = key_totals(key_id)

    last_minute = SpendingOf(key_id, key.user_id, key_period=None, user_period=None, minute=True)
    tokens_minute = read_alone(lambda reads: ask_spending(reads, last_minute, now)).minute_tokens
    bounds = period_bounds(key.budget_period, now)
    in_budget: int | None = None
    if key.token_budget is not None:
        spent = key_totals(key_id, since=bounds[0] if bounds else None).total_tokens
        in_budget = max(key.token_budget - spent, 0)
    return {
        "object": "key",
        "name": key.name,
        "prefix": key.prefix,
        "created": int(key.created.timestamp()),
        "expires_at": int(key.expires_at.timestamp()) if key.expires_at else None,
        "limits": {
            "rpm": key.rpm,
            "tpm": key.tpm,
            "max_concurrency": key.max_concurrency,
            "token_budget": key.token_budget,
            "budget_period": key.budget_period,
            "allowed_models": list(key.allowed_models),
        },
        "usage": {
            "requests": totals.requests,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "total_tokens": totals.total_tokens,
        },
        "remaining": {
            "requests_this_minute": None if key.rpm is None else max(key.rpm - requests_minute, 0),
            "tokens_this_minute": None if key.tpm is None else max(key.tpm - tokens_minute, 0),
            "tokens_in_budget": in_budget,
            "budget_resets_at": int(bounds[1].timestamp()) if bounds else None,
        },
    }
