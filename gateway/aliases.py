"""Model aliases: a name of the gateway's own, served by a target model or its fallbacks."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import DatabaseError

from accounts.db_thread import run_shared_in_db_thread
from gateway.models import ModelAlias

_aliases: dict[str, list[str]] = {}
_loaded_at = -1e9
_have_copy = False


def load_aliases() -> dict[str, list[str]]:
    return {
        alias.alias.lower(): [alias.target, *alias.fallbacks] for alias in ModelAlias.objects.all()
    }


async def aliases() -> dict[str, list[str]]:
    """alias → [target, fallback, ...], read at most every SETTINGS_CACHE_SECONDS."""
    global _aliases, _loaded_at, _have_copy
    if time.monotonic() - _loaded_at > settings.SETTINGS_CACHE_SECONDS:
        try:
            _aliases = await run_shared_in_db_thread("aliases", load_aliases)
        except DatabaseError:
            if not _have_copy:
                raise
            return _aliases  # the last copy serves while the database is away
        _loaded_at, _have_copy = time.monotonic(), True
    return _aliases


async def models_to_try(model: str) -> list[str]:
    """The upstream models that may serve `model`, in order: itself unless it is an alias."""
    return (await aliases()).get(model.lower()) or [model]


def add_alias(*, alias: str, target: str, fallbacks: list[str]) -> ModelAlias:
    row, _created = ModelAlias.objects.update_or_create(
        alias=alias.strip().lower(),
        defaults={"target": target.strip(), "fallbacks": [f.strip() for f in fallbacks if f]},
    )
    return row
