"""`add_upstream --label L [...]`: the token comes from stdin, never from argv."""

from __future__ import annotations

import getpass
import sys
from typing import Any, TextIO

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.models import Provider
from gateway.upstreams import add_upstream


class Command(BaseCommand):
    help = "Add an upstream. Reads its token from stdin; prints the label."
    # Let tests and scripts hand in a stream: call_command(..., stdin=io.StringIO(...)).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--label", required=True)
        parser.add_argument("--account", default="", help="Defaults to the label.")
        parser.add_argument("--provider", default=Provider.PUTER.value, help="puter or openai.")
        parser.add_argument("--base-url", default="", help="Blank means the provider's default.")
        parser.add_argument("--weight", default="1")
        parser.add_argument("--max-concurrency", default="3")
        parser.add_argument("--priority", default="0", help="Higher tiers are used first.")
        parser.add_argument("--models", default="", help="Served models, comma-separated.")

    def handle(self, *args: Any, **options: Any) -> None:
        token = read_token(options.get("stdin") or sys.stdin)
        try:
            upstream = add_upstream(
                label=options["label"],
                token=token,
                provider=options["provider"],
                account=options["account"],
                base_url=options["base_url"],
                weight=_whole(options["weight"], "--weight"),
                max_concurrency=_whole(options["max_concurrency"], "--max-concurrency"),
                priority=_whole(options["priority"], "--priority"),
                models=options["models"].split(","),
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(f"Added {upstream.provider} upstream {upstream.label}.")
        self.stdout.write(upstream.label)


def read_token(stream: TextIO) -> str:
    """The token on `stream`, surrounding whitespace removed; refuse an empty one."""
    raw = getpass.getpass("Token: ", stream=sys.stderr) if stream.isatty() else stream.read()
    token = raw.strip()
    if not token:
        raise CommandError("No token on stdin: pipe one in, e.g. `... < token.txt`.")
    return token


def _whole(raw: str, flag: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise CommandError(f"{flag} must be a whole number, not {raw!r}.") from None
