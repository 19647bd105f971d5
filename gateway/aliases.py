"""Model aliases: a name of the gateway's own, served by a target model or its fallbacks."""

from __future__ import annotations

import time

from django.conf import settings

from accounts.db_thread import run_in_db_thread
from gateway.models import ModelAlias

_aliases: dict[str, list[str]] = {}
_loaded_at = -1e9


def load_aliases() -> dict[str, list[str]]:
    return {
        alias.alias.lower(): [alias.target, *alias.fallbacks] for alias in ModelAlias.objects.all()
    }


async def aliases() -> dict[str, list[str]]:
    """alias → [target, fallback, ...], read at most every SETTINGS_CACHE_SECONDS."""
    global _aliases, _loaded_at
    if time.monotonic() - _loaded_at > settings.SETTINGS_CACHE_SECONDS:
        _aliases = await run_in_db_thread(load_aliases)
        _loaded_at = time.monotonic()
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
