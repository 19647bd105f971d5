"""The model catalogue: what the pool's upstreams serve, cached, in OpenAI's shape."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from accounts.keys import KeyFacts
from gateway.aliases import aliases
from gateway.pool import pool_entries
from gateway.providers.base import UpstreamFailure, UpstreamTarget
from gateway.providers.registry import provider_for
from gateway.upstream_client import upstream_client

HIDDEN_MODELS = frozenset({"fake", "costly", "abuse", "model-fallback-test-1"})

_models: list[dict[str, Any]] = []
_loaded_at = -1e9
_services: frozenset[tuple[str, str]] = frozenset()  # the services _models was read from


def openai_models(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id and each alias without whitespace as an OpenAI model; ids are lowercase."""
    seen: dict[str, dict[str, Any]] = {}
    for detail in details:
        owner = str(detail.get("provider") or "puter")
        names = [detail.get("id") or detail.get("name")]
        names += [a for a in detail.get("aliases") or [] if isinstance(a, str)]
        for name in names:
            if not isinstance(name, str) or not name or any(c.isspace() for c in name):
                continue
            model_id = name.lower()
            if model_id in HIDDEN_MODELS or model_id in seen:
                continue
            seen[model_id] = {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
    return list(seen.values())


def _default_target() -> UpstreamTarget:
    return UpstreamTarget(0, "default", "puter", "", "", "", 1, 3, 0, ())


async def all_models() -> list[dict[str, Any]]:
    """The cached catalogue; read afresh when stale or when the pool's services changed."""
    services = frozenset(_service(e.target) for e in await pool_entries())
    if _models and models_age() < settings.MODELS_CACHE_SECONDS and services == _services:
        return _models
    return await refresh_models()


def models_age() -> float:
    return time.monotonic() - _loaded_at


def _service(target: UpstreamTarget) -> tuple[str, str]:
    return target.provider, target.base_url


async def refresh_models() -> list[dict[str, Any]]:
    """Ask each distinct service once, through its first upstream that answers."""
    global _models, _loaded_at, _services
    entries = await pool_entries()
    now = time.time()
    by_service: dict[tuple[str, str], list[UpstreamTarget]] = {}
    # Healthy upstreams first: a disabled key would be refused the list.
    for entry in sorted(entries, key=lambda e: not e.available(now)):
        by_service.setdefault(_service(entry.target), []).append(entry.target)
    if not by_service:
        by_service[("puter", "")] = [_default_target()]
    details: list[dict[str, Any]] = []
    for targets in by_service.values():
        details += await _service_models(targets)
    if details:
        _models, _loaded_at = openai_models(details), time.monotonic()
        _services = frozenset(_service(entry.target) for entry in entries)
    return _models


async def _service_models(targets: list[UpstreamTarget]) -> list[dict[str, Any]]:
    for target in targets[:3]:
        try:
            return await provider_for(target).list_models(upstream_client(), target)
        except UpstreamFailure:
            continue
    return []


def allowed(model_id: str, key: KeyFacts) -> bool:
    permitted = key.limits.allowed_models
    return not permitted or model_id.lower() in {m.lower() for m in permitted}


async def models_for(key: KeyFacts) -> list[dict[str, Any]]:
    """Upstream models and the gateway's aliases that this key may use."""
    listed = await all_models()
    known = {model["id"] for model in listed}
    alias_models = [
        {"id": alias, "object": "model", "created": 0, "owned_by": "puter-gateway"}
        for alias in sorted(await aliases())
        if alias not in known
    ]
    return [model for model in listed + alias_models if allowed(model["id"], key)]
