"""`set_upstream LABEL [--enable|--disable] [--weight N] [--max-concurrency N] [--priority N]`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.models import Upstream
from gateway.upstreams import set_enabled


class Command(BaseCommand):
    help = "Change an upstream's switch, weight, cap or priority. Prints the label."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("label")
        switch = parser.add_mutually_exclusive_group()
        switch.add_argument("--enable", action="store_true")
        switch.add_argument("--disable", action="store_true")
        parser.add_argument("--weight", type=int)
        parser.add_argument("--max-concurrency", type=int)
        parser.add_argument("--priority", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        upstream = Upstream.objects.filter(label=options["label"]).first()
        if upstream is None:
            raise CommandError(f"No upstream is labelled {options['label']!r}.")
        for name in ("weight", "max_concurrency"):
            value = options[name]
            if value is not None and value < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        changed = [
            name for name in ("weight", "max_concurrency", "priority") if options[name] is not None
        ]
        for name in changed:
            setattr(upstream, name, options[name])
        if changed:
            upstream.save(update_fields=changed)
        if options["enable"] or options["disable"]:
            set_enabled(upstream=upstream, enabled=bool(options["enable"]))
        self.stderr.write(
            f"{upstream.label}: enabled={upstream.enabled} weight={upstream.weight} "
            f"max_concurrency={upstream.max_concurrency} priority={upstream.priority}"
        )
        self.stdout.write(upstream.label)
