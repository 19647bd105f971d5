"""`bootstrap`: run by `make run` after `migrate` on every start.

A first start (no superuser yet) creates the admin and its first key and prints them once.
Every start imports PUTER_TOKENS into the pool, skipping the ones already there.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.keys import KeyLimits, issue_key
from accounts.people import create_superuser, has_superuser
from gateway.upstreams import import_puter_tokens


class Command(BaseCommand):
    help = "Create the admin and its first key on a first start; import PUTER_TOKENS."

    def handle(self, *args: Any, **options: Any) -> None:
        if not has_superuser():
            self.create_admin()
        added = import_puter_tokens(settings.PUTER_TOKENS)
        self.stderr.write(
            f"Imported {len(added)} new Puter token(s) of {len(settings.PUTER_TOKENS)} "
            "in PUTER_TOKENS."
        )

    def create_admin(self) -> None:
        username = settings.ADMIN_USERNAME
        password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(18)
        # One transaction: a crash must not leave an admin whose key was never printed.
        with transaction.atomic():
            try:
                admin = create_superuser(username=username, password=password)
            except ValidationError as exc:
                raise CommandError(
                    f"Cannot create the admin {username!r}: {' '.join(exc.messages)}"
                ) from None
            _key, raw = issue_key(user=admin, name="default", limits=KeyLimits())
        self.stderr.write(f"Created the admin {username!r} and its first API key.")
        if not settings.ADMIN_PASSWORD:
            self.stdout.write(f"Admin password: {password}")
        self.stdout.write(f"API key: {raw}")
