"""The rollups kept with every ledger row, in the row's own transaction.

Per key, model and day (dashboards and budgets) and per key and second (tokens per
minute). Plain SQL upserts: one statement each on every request, where the ORM's
update-then-create took three.
"""

from __future__ import annotations

import datetime as dt
import math
import time
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
VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s, %s)
ON CONFLICT (key_id, model, day) DO UPDATE SET
    requests = {DAILY}.requests + 1,
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


def rollup_statements(row: dict[str, Any], *, finished: dt.datetime) -> list[Statement]:
    """What counts a ledger row (its model's fields as plain values) in both rollups."""
    created = row["created"]
    assert isinstance(created, dt.datetime)
    status = row["status"]
    day = [
        created.astimezone(dt.UTC).date(),
        row["key_id"],
        row["user_id"],
        row["model"],
        row["prompt_tokens"],
        row["completion_tokens"],
        row["total_tokens"],
        int(status in FAILED),
        int(status == UsageStatus.REJECTED),
    ]
    statements: list[Statement] = [(_ADD_TO_DAY, day)]
    total = row["total_tokens"]
    if isinstance(total, int) and total > 0:
        second = math.floor(finished.timestamp())
        statements.append((_ADD_TO_SECOND, [row["key_id"], second, total]))
        if _cleanups.due(row["key_id"], time.monotonic()):
            statements.append((_FORGET_SECONDS, [row["key_id"], second - KEEP_SECONDS]))
    return statements


_FORGET_SECONDS = f"DELETE FROM {SECONDS} WHERE key_id = %s AND second < %s"
_cleanups = AtMostEvery(60.0)  # deletions of a key's old per-second rows
