"""`revoke_key PREFIX`: the key stops working at once; prints the prefix."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.keys import KeyNotFound, revoke_key


class Command(BaseCommand):
    help = "Revoke the API key with this prefix (sk- and 8 characters). Prints the prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].strip().rstrip("…")
        try:
            key = revoke_key(prefix=prefix)
        except KeyNotFound:
            raise CommandError(f"No key has the prefix {prefix!r}.") from None
        assert key.revoked_at is not None  # revoke_key sets it
        self.stderr.write(
            f"Key {key.prefix}… of {key.user.username} revoked at {key.revoked_at.isoformat()}."
        )
        self.stdout.write(key.prefix)
