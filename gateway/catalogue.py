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
    global _models, _loaded_at
    if _models and time.monotonic() - _loaded_at < settings.MODELS_CACHE_SECONDS:
        return _models
    entries = await pool_entries()
    # One list per distinct service: tokens of one base URL see the same catalogue.
    distinct = {(e.target.provider, e.target.base_url): e.target for e in entries}
    targets = list(distinct.values()) or [_default_target()]
    details: list[dict[str, Any]] = []
    for target in targets:
        try:
            details += await provider_for(target).list_models(upstream_client(), target)
        except UpstreamFailure:
            continue
    if details:
        _models, _loaded_at = openai_models(details), time.monotonic()
    return _models


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
