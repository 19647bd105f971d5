"""Removing old ledger rows in bounded batches; the daily rollup stays whole."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.db.models import Max, Min

from accounts.models import UsageLog

# Ids per DELETE: each batch is a short transaction, so writers of new rows never wait long.
BATCH = 5000


def prune_ledger(
    *, before: dt.datetime, batch: int = BATCH, progress: Callable[[int], None] | None = None
) -> int:
    """Delete ledger rows created before `before`, one primary-key range at a time."""
    old = UsageLog.objects.filter(created__lt=before)
    bounds = old.aggregate(low=Min("id"), high=Max("id"))
    if bounds["low"] is None:
        return 0
    deleted = 0
    for start in range(bounds["low"], bounds["high"] + 1, batch):
        count, _by_model = old.filter(id__gte=start, id__lt=start + batch).delete()
        deleted += count
        if progress is not None and count:
            progress(deleted)
    return deleted
