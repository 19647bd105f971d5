"""`set_user_limits USERNAME [--budget-tokens N] [--budget-period day|month] [--max-keys N]`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import BudgetPeriod, UserLimits


class Command(BaseCommand):
    help = "Set a user's limits across all their keys. Prints the username."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--budget-tokens", type=int)
        parser.add_argument("--budget-period", choices=[BudgetPeriod.DAY, BudgetPeriod.MONTH])
        parser.add_argument("--max-keys", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user is named {options['username']!r}.")
        for name in ("budget_tokens", "max_keys"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} cannot be negative.")
        limits, _created = UserLimits.objects.get_or_create(user=user)
        if options["budget_tokens"] is not None:
            limits.token_budget = options["budget_tokens"]
        if options["budget_period"] is not None:
            limits.budget_period = options["budget_period"]
        if options["max_keys"] is not None:
            limits.max_keys = options["max_keys"]
        limits.save()
        self.stderr.write(
            f"{user.username}: budget {limits.token_budget} per {limits.budget_period}, "
            f"at most {limits.max_keys} keys."
        )
        self.stdout.write(user.username)
