"""`rotate_key PREFIX [--grace-minutes N]`: a new secret for the same key; prints it alone."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.keys import KeyNotFound, rotate_key


class Command(BaseCommand):
    help = "Give the key a new secret; the old one keeps working for the grace period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")
        parser.add_argument("--grace-minutes", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].strip().rstrip("…")
        grace = options["grace_minutes"]
        if grace < 0:
            raise CommandError("--grace-minutes cannot be negative.")
        try:
            key, raw = rotate_key(prefix=prefix, grace_minutes=grace)
        except KeyNotFound:
            raise CommandError(f"No key has the prefix {prefix!r}.") from None
        self.stderr.write(f"Key {key.prefix}… rotated; the old secret works for {grace} min.")
        self.stdout.write(raw)
