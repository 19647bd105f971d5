"""The rollups kept with every ledger row, in the row's own transaction.

Per key, model and day (dashboards and budgets) and per key and second (tokens per
minute). Plain SQL upserts: one statement each per write of rows, where the ORM's
update-then-create took three per row.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from accounts.models import KeyTokensSecond, UsageDaily, UsageStatus
from accounts.pacing import AtMostEvery
from accounts.sql_batch import Statement

DAILY = UsageDaily._meta.db_table
SECONDS = KeyTokensSecond._meta.db_table
KEEP_SECONDS = 120  # per-second rows older than this are never read again (kept at most 3 min)
FAILED = {UsageStatus.UPSTREAM_ERROR, UsageStatus.INVALID_REQUEST}

_ADD_TO_DAY = f"""
INSERT INTO {DAILY} (day, key_id, user_id, model, requests, prompt_tokens,
                     completion_tokens, total_tokens, errors, rejected)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key_id, model, day) DO UPDATE SET
    requests = {DAILY}.requests + EXCLUDED.requests,
    prompt_tokens = {DAILY}.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = {DAILY}.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = {DAILY}.total_tokens + EXCLUDED.total_tokens,
    errors = {DAILY}.errors + EXCLUDED.errors,
    rejected = {DAILY}.rejected + EXCLUDED.rejected
"""

_ADD_TO_SECOND = f"""
INSERT INTO {SECONDS} (key_id, second, tokens) VALUES (%s, %s, %s)
ON CONFLICT (key_id, second) DO UPDATE SET tokens = {SECONDS}.tokens + EXCLUDED.tokens
"""


def finished_at(created: dt.datetime, latency_ms: int | None) -> dt.datetime:
    """When a ledger row's request ended: the second its tokens count in for tpm."""
    return created + dt.timedelta(milliseconds=latency_ms or 0)


def rollup_statements(rows: Sequence[tuple[dict[str, Any], dt.datetime]]) -> list[Statement]:
    """What counts ledger rows (their model's fields as plain values, each with the moment it
    finished) in both rollups: one upsert per day and model of a key, one per second.

    Rows written together are summed first (an upsert may not touch a row twice), and the
    upserts go in a fixed order, so that two transactions on PostgreSQL never wait for each
    other's rows in opposite orders.
    """
    days: dict[tuple[dt.date, int, str], list[Any]] = {}
    seconds: dict[tuple[int, int], int] = defaultdict(int)
    for row, finished in rows:
        created = row["created"]
        assert isinstance(created, dt.datetime)
        day = created.astimezone(dt.UTC).date()
        status = row["status"]
        counts = [
            1,
            row["prompt_tokens"],
            row["completion_tokens"],
            row["total_tokens"],
            int(status in FAILED),
            int(status == UsageStatus.REJECTED),
        ]
        where = (day, row["key_id"], row["model"])
        tally = days.setdefault(where, [row["user_id"], 0, 0, 0, 0, 0, 0])
        for place, count in enumerate(counts, start=1):
            tally[place] += count
        total = row["total_tokens"]
        if isinstance(total, int) and total > 0:
            seconds[(row["key_id"], math.floor(finished.timestamp()))] += total
    statements: list[Statement] = [
        (_ADD_TO_DAY, [day, key_id, tally[0], model, *tally[1:]])
        for (day, key_id, model), tally in sorted(days.items())
    ]
    statements += [
        (_ADD_TO_SECOND, [key_id, second, tokens])
        for (key_id, second), tokens in sorted(seconds.items())
    ]
    now = time.monotonic()
    for key_id, second in sorted(seconds):
        if _cleanups.due(key_id, now):
            statements.append((_FORGET_SECONDS, [key_id, second - KEEP_SECONDS]))
    return statements


_FORGET_SECONDS = f"DELETE FROM {SECONDS} WHERE key_id = %s AND second < %s"
_cleanups = AtMostEvery(60.0)  # deletions of a key's old per-second rows
