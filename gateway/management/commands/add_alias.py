"""`add_alias ALIAS TARGET [--fallbacks m1,m2]`: a model name of the gateway's own."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.aliases import add_alias


class Command(BaseCommand):
    help = "Create or change a model alias; prints the alias."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("alias")
        parser.add_argument("target")
        parser.add_argument("--fallbacks", default="", help="Comma-separated models tried next.")

    def handle(self, *args: Any, **options: Any) -> None:
        alias, target = options["alias"].strip(), options["target"].strip()
        if not alias or not target or any(c.isspace() for c in alias):
            raise CommandError("An alias and a target are needed; an alias has no spaces.")
        fallbacks = [name.strip() for name in options["fallbacks"].split(",") if name.strip()]
        row = add_alias(alias=alias, target=target, fallbacks=fallbacks)
        self.stderr.write(
            f"{row.alias} now serves {row.target} (fallbacks: {fallbacks or 'none'})."
        )
        self.stdout.write(row.alias)
