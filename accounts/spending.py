"""What admission reads on every limited request: tokens of the budget periods and minute.

Plain SQL over the daily rollup and the per-second token rows, one statement per call:
this runs before every request of a key with a budget or a tokens-per-minute limit.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.db import connection

from accounts.models import BudgetPeriod, KeyTokensSecond, UsageDaily

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


def _since(period: str, now: dt.datetime) -> dt.date:
    bounds = period_bounds(period, now)
    return bounds[0] if bounds else dt.date(1970, 1, 1)  # "none": all time


def spending(
    *,
    key_id: int,
    user_id: int,
    key_period: str | None,
    user_period: str | None,
    minute: bool,
    now: dt.datetime,
) -> Spending:
    """Tokens of the key's and the user's current budget periods and of the last minute.

    A period of None skips that question; "none" means a lifetime budget.
    """
    parts: list[str] = []
    params: list[int | dt.date] = []
    if key_period is not None:
        parts.append(
            f"SELECT COALESCE(SUM(total_tokens), 0) FROM {DAILY} WHERE key_id = %s AND day >= %s"
        )  # constant table names
        params += [key_id, _since(key_period, now)]
    if user_period is not None:
        parts.append(
            f"SELECT COALESCE(SUM(total_tokens), 0) FROM {DAILY} WHERE user_id = %s AND day >= %s"
        )
        params += [user_id, _since(user_period, now)]
    if minute:
        since = math.floor(now.timestamp()) - MINUTE
        parts.append(
            f"SELECT COALESCE(SUM(tokens), 0) FROM {SECONDS} WHERE key_id = %s AND second > %s"
        )
        parts.append(f"SELECT MIN(second) FROM {SECONDS} WHERE key_id = %s AND second > %s")
        params += [key_id, since, key_id, since]
    if not parts:
        return Spending(0, 0, 0, 0.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"({part})" for part in parts), params)
        values = list(cursor.fetchone())
    key_tokens = int(values.pop(0)) if key_period is not None else 0
    user_tokens = int(values.pop(0)) if user_period is not None else 0
    if not minute:
        return Spending(key_tokens, user_tokens, 0, 0.0)
    minute_tokens, oldest = int(values[0]), values[1]
    reset = oldest + MINUTE - now.timestamp() if oldest is not None else 0.0
    return Spending(key_tokens, user_tokens, minute_tokens, max(reset, 0.0))
