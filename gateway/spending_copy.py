"""With REDIS_URL, a copy of the token spending in Redis, read by admission's one script.

Without it, every request of a key with a budget or a tokens-per-minute limit waits for a
read of the rollups beside its Redis script (a database step, the slowest part of
admission under load). The rollups stay the truth: admission starts a copy that is not
there and seeds it with what it then reads from them; rows add their tokens to the copies
there are (seeded or started) once they are committed; every copy lives COPY_TTL seconds
(gateway/counters_redis.py) from its start, then is started and read again.

So no committed row is missed: one committed after a copy's start is added to it, one
before is in the read. A row committed just before the start but added after it counts
twice until the copy expires (a budget refused a little early, never late). Rows committed
while Redis could not be reached are missing from the copies until they expire.

The copies: a key's tokens since a day (`spent:key:<id>:<day>`), a user's the same
(`spent:user:<id>:<day>`), and a key's tokens per second (`spent:sec:<id>`).
A day names a budget period's first day, so every period of every key is covered by the
three days a row is counted under: its own, its month's first and 1970-01-01 ("none").
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from accounts.rollups import finished_at
from accounts.spending import Spending, SpendingOf, minute_reset, minute_since, period_since
from gateway.counters import CountersUnavailable, Spent, SpentAsk, store
from gateway.counters_redis import RedisStore

_EPOCH = dt.date(1970, 1, 1)

logger = logging.getLogger("gateway.spending_copy")


def ask(of: SpendingOf, now: dt.datetime) -> SpentAsk:
    """The copies the limits of a key compare against at `now` (None: not needed)."""
    key_period = user_period = None
    if of.key_period is not None:
        key_period = _key_scope(of.key_id, period_since(of.key_period, now))
    if of.user_period is not None:
        user_period = _user_scope(of.user_id, period_since(of.user_period, now))
    minute = _seconds_scope(of.key_id) if of.minute else None
    return SpentAsk(key_period, user_period, minute, since_second=minute_since(now))


def spending(asked: SpentAsk, spent: Spent | None, now: dt.datetime) -> Spending | None:
    """What the copies say; None if one that was asked for is missing."""
    if spent is None:
        return None
    figures = (
        (asked.key_period, spent.key_period),
        (asked.user_period, spent.user_period),
        (asked.minute, spent.minute),
    )
    if any(scope is not None and value is None for scope, value in figures):
        return None
    return Spending(
        spent.key_period or 0,
        spent.user_period or 0,
        spent.minute or 0,
        minute_reset(spent.oldest_second, now),
    )


async def seed(asked: SpentAsk, read: Spending, seconds: list[tuple[int, int]]) -> None:
    """Seed the copies of `asked` started for this read with what it read from the rollups.

    A copy another admission seeded meanwhile is kept; if Redis cannot be reached the next
    admission reads the rollups again.
    """
    redis = store()
    assert isinstance(redis, RedisStore)
    try:
        await redis.seed_spent(asked, read, seconds)
    except CountersUnavailable:
        logger.warning("spending copy not stored: Redis unavailable")


def increments(
    entries: Sequence[dict[str, Any]],
) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    """What ledger rows add to the copies: tokens per period scope, per (scope, second)."""
    periods: dict[str, int] = defaultdict(int)
    seconds: dict[tuple[str, int], int] = defaultdict(int)
    for entry in entries:
        tokens = entry["total_tokens"]
        if not isinstance(tokens, int) or tokens <= 0:
            continue
        created = dt.datetime.fromisoformat(entry["created"])
        day = created.astimezone(dt.UTC).date()
        for since in {day, day.replace(day=1), _EPOCH}:
            periods[_key_scope(entry["key_id"], since)] += tokens
            periods[_user_scope(entry["user_id"], since)] += tokens
        second = math.floor(finished_at(created, entry["latency_ms"]).timestamp())
        seconds[(_seconds_scope(entry["key_id"]), second)] += tokens
    return dict(periods), dict(seconds)


def _key_scope(key_id: int, since: dt.date) -> str:
    return f"spent:key:{key_id}:{since.isoformat()}"


def _user_scope(user_id: int, since: dt.date) -> str:
    return f"spent:user:{user_id}:{since.isoformat()}"


def _seconds_scope(key_id: int) -> str:
    return f"spent:sec:{key_id}"
