"""Which provider class speaks to an upstream: one entry per provider module."""

from __future__ import annotations

from gateway.providers.base import Provider, UpstreamTarget
from gateway.providers.puter import PuterProvider

_providers: dict[str, Provider] = {"puter": PuterProvider()}


def provider_for(target: UpstreamTarget) -> Provider:
    try:
        return _providers[target.provider]
    except KeyError:
        raise LookupError(f"no provider named {target.provider!r}") from None
