"""`prune_usage --older-than DAYS`: delete old ledger rows, keep the daily rollup."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.usage_pruning import prune_ledger


class Command(BaseCommand):
    help = (
        "Delete usage ledger rows older than DAYS days, in small batches; the daily rollup "
        "(and so every chart and budget) keeps them. Prints the number of rows deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 0:
            raise CommandError("--older-than cannot be negative.")
        cutoff = timezone.now() - dt.timedelta(days=days)
        deleted = prune_ledger(before=cutoff, progress=self._progress)
        self.stderr.write(f"Deleted {deleted} ledger rows created before {cutoff.isoformat()}.")
        self.stdout.write(str(deleted))

    def _progress(self, deleted: int) -> None:
        self.stderr.write(f"… {deleted} rows deleted so far")
