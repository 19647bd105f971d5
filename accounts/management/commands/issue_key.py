"""`issue_key USERNAME [limits...]`: prints the new key alone on stdout."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.key_options import budget_of, normalize_networks, parse_expiry, split_names
from accounts.keys import KeyLimits, KeyQuotaExceeded, issue_key, with_defaults
from accounts.people import get_or_create_key_holder


class Command(BaseCommand):
    help = "Issue an API key, creating the user when missing. Prints only the key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A name to tell the key apart.")
        parser.add_argument("--models", default="", help="Allowed models, comma-separated.")
        parser.add_argument("--rpm", help="Requests per minute.")
        parser.add_argument("--tpm", help="Tokens per minute.")
        parser.add_argument("--concurrency", help="Requests in flight at once.")
        parser.add_argument("--budget-tokens", help="Token budget (lifetime without a period).")
        parser.add_argument("--budget-period", help="day or month.")
        parser.add_argument("--expires", help="YYYY-MM-DD (00:00 UTC) or an ISO datetime.")
        parser.add_argument(
            "--allowed-ips", default="", help="Addresses or CIDRs, comma-separated."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        limits = with_defaults(limits_from_options(options))
        with transaction.atomic():
            try:
                user, created = get_or_create_key_holder(username=options["username"])
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            try:
                key, raw = issue_key(user=user, name=options["name"], limits=limits)
            except KeyQuotaExceeded as exc:
                raise CommandError(str(exc)) from None
        if created:
            self.stderr.write(f"Created user {user.username} (no password, not staff).")
        self.stderr.write(f"Issued key {key.prefix}… for {user.username}.")
        self.stdout.write(raw)


def limits_from_options(options: dict[str, Any]) -> KeyLimits:
    """The KeyLimits the options ask for; CommandError names the first bad value."""
    try:
        budget, period = budget_of(
            tokens=_count(options["budget_tokens"], "--budget-tokens"),
            period=options["budget_period"],
        )
        expires_at = parse_expiry(options["expires"]) if options["expires"] else None
        allowed_ips = normalize_networks(split_names(options["allowed_ips"]))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if expires_at is not None and expires_at <= timezone.now():
        raise CommandError(f"--expires {options['expires']} is already in the past.")
    return KeyLimits(
        allowed_models=split_names(options["models"]),
        allowed_ips=allowed_ips,
        rpm=_count(options["rpm"], "--rpm"),
        tpm=_count(options["tpm"], "--tpm"),
        max_concurrency=_count(options["concurrency"], "--concurrency"),
        token_budget=budget,
        budget_period=period,
        expires_at=expires_at,
    )


def _count(raw: str | None, flag: str) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(f"{flag} must be a whole number, not {raw!r}.") from None
    if value < 1:
        raise CommandError(f"{flag} must be at least 1, not {value}.")
    if value > _LARGEST[flag]:
        raise CommandError(f"{flag} can be at most {_LARGEST[flag]}, not {value}.")
    return value


# What the columns hold (PostgreSQL refuses more; SQLite would silently accept it).
_LARGEST = {
    "--rpm": 2**31 - 1,
    "--tpm": 2**31 - 1,
    "--concurrency": 2**31 - 1,
    "--budget-tokens": 2**63 - 1,
}
