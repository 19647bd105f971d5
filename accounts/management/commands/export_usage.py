"""`export_usage [--since YYYY-MM-DD] [--user U] [--key PREFIX] [--format csv|jsonl]`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiKey
from accounts.usage_export import FORMATS, ExportFilter, export_chunks


def _day(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise CommandError(f"--since must be a date (YYYY-MM-DD), not {raw!r}.") from None


class Command(BaseCommand):
    help = (
        "Write the usage ledger to stdout, one CSV row or JSON object per request, oldest "
        "first; --since starts at 00:00 UTC that day."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="first day, YYYY-MM-DD (UTC)")
        parser.add_argument("--user", help="only this user's rows (username)")
        parser.add_argument("--key", help="only this key's rows (its prefix)")
        parser.add_argument("--format", choices=FORMATS, default="csv")

    def handle(self, *args: Any, **options: Any) -> None:
        selection = ExportFilter(
            since=_day(options["since"]) if options["since"] else None,
            user_id=self._user_id(options["user"]),
            key_id=self._key_id(options["key"]),
        )
        for chunk in export_chunks(selection, options["format"]):
            self.stdout.write(chunk.decode(), ending="")
        self.stdout.flush()

    def _user_id(self, username: str | None) -> int | None:
        if username is None:
            return None
        user = User.objects.filter(username=username).only("pk").first()
        if user is None:
            raise CommandError(f"No user is named {username!r}.")
        return user.pk

    def _key_id(self, prefix: str | None) -> int | None:
        if prefix is None:
            return None
        key = ApiKey.objects.filter(prefix=prefix.strip().rstrip("…")).only("pk").first()
        if key is None:
            raise CommandError(f"No key has the prefix {prefix!r}.")
        return key.pk
