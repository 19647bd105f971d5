"""What admission reads on every limited request: tokens of the budget periods and minute.

Plain SQL over the daily rollup and the per-second token rows, one statement per call:
this runs before every request of a key with a budget or a tokens-per-minute limit.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any

from django.db import connection

from accounts.models import BudgetPeriod, KeyTokensSecond, UsageDaily
from accounts.sql_batch import Reads

DAILY = UsageDaily._meta.db_table
SECONDS = KeyTokensSecond._meta.db_table
MINUTE = 60


@dataclass(frozen=True, slots=True)
class Spending:
    """What a key's limits compare against, read in one database step."""

    key_period_tokens: int
    user_period_tokens: int
    minute_tokens: int
    minute_reset_after: float  # seconds until the oldest of those tokens leave the window


def period_bounds(period: str, now: dt.datetime) -> tuple[dt.date, dt.datetime] | None:
    """(first day of the current budget period, when the next one starts), in UTC."""
    today = now.astimezone(dt.UTC).date()
    if period == BudgetPeriod.DAY:
        start = today
        end = start + dt.timedelta(days=1)
    elif period == BudgetPeriod.MONTH:
        start = today.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    else:
        return None
    return start, dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)


def period_since(period: str, now: dt.datetime) -> dt.date:
    """The first day whose tokens count in the budget period of `now`."""
    bounds = period_bounds(period, now)
    return bounds[0] if bounds else dt.date(1970, 1, 1)  # "none": all time


def minute_since(now: dt.datetime) -> int:
    """The last second before the minute of `now` (its tokens no longer count)."""
    return math.floor(now.timestamp()) - MINUTE


def minute_reset(oldest: float | None, now: dt.datetime) -> float:
    """Seconds until the oldest of the minute's tokens (counted in second `oldest`) leave it."""
    return max(oldest + MINUTE - now.timestamp(), 0.0) if oldest is not None else 0.0


def minute_seconds(key_id: int, now: dt.datetime) -> list[tuple[int, int]]:
    """The key's tokens of each second of the minute of `now`, as (second, tokens)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT second, tokens FROM {SECONDS} WHERE key_id = %s AND second > %s",
            [key_id, minute_since(now)],
        )
        return [(int(second), int(tokens)) for second, tokens in cursor.fetchall()]


def with_minute(spent: Spending, seconds: list[tuple[int, int]], now: dt.datetime) -> Spending:
    """`spent` with the minute's tokens, from the per-second rows `minute_seconds` read."""
    oldest = min((second for second, _tokens in seconds), default=None)
    return replace(
        spent,
        minute_tokens=sum(tokens for _second, tokens in seconds),
        minute_reset_after=minute_reset(oldest, now),
    )


@dataclass(frozen=True, slots=True)
class SpendingOf:
    """Whose tokens a key's limits compare against: the key's and its user's budget periods
    (None: no budget; "none": a lifetime one) and, with `minute`, the key's last minute."""

    key_id: int
    user_id: int
    key_period: str | None
    user_period: str | None
    minute: bool


@dataclass(frozen=True, slots=True)
class SpendingQuestion:
    """Where the answers of `ask_spending` are in a row of `Reads`."""

    key_period: int | None
    user_period: int | None
    minute: int | None  # then the oldest second follows it
    now: dt.datetime

    def answer(self, values: list[Any]) -> Spending:
        key_tokens = int(values[self.key_period]) if self.key_period is not None else 0
        user_tokens = int(values[self.user_period]) if self.user_period is not None else 0
        if self.minute is None:
            return Spending(key_tokens, user_tokens, 0, 0.0)
        minute_tokens, oldest = int(values[self.minute]), values[self.minute + 1]
        return Spending(key_tokens, user_tokens, minute_tokens, minute_reset(oldest, self.now))


def ask_spending(reads: Reads, of: SpendingOf, now: dt.datetime) -> SpendingQuestion:
    """Add the spending's subqueries to `reads` (constant table names are formatted in):
    tokens of the key's and the user's current budget periods and of the last minute.
    """
    key_id, user_id, key_period, user_period = of.key_id, of.user_id, of.key_period, of.user_period
    key_at = user_at = minute_at = None
    if key_period is not None:
        key_at = reads.add(
            f"SELECT COALESCE(SUM(total_tokens), 0) FROM {DAILY} WHERE key_id = %s AND day >= %s",
            [key_id, period_since(key_period, now)],
        )
    if user_period is not None:
        user_at = reads.add(
            f"SELECT COALESCE(SUM(total_tokens), 0) FROM {DAILY} WHERE user_id = %s AND day >= %s",
            [user_id, period_since(user_period, now)],
        )
    if of.minute:
        since = minute_since(now)
        minute_at = reads.add(
            f"SELECT COALESCE(SUM(tokens), 0) FROM {SECONDS} WHERE key_id = %s AND second > %s",
            [key_id, since],
        )
        reads.add(
            f"SELECT MIN(second) FROM {SECONDS} WHERE key_id = %s AND second > %s", [key_id, since]
        )
    return SpendingQuestion(key_at, user_at, minute_at, now)
