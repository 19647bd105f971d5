"""Which media provider speaks to an upstream: the media twin of `registry.py`."""

from __future__ import annotations

from gateway.providers.base import MediaProvider, UpstreamTarget
from gateway.providers.puter_media import PuterMedia

_media_providers: dict[str, MediaProvider] = {"puter": PuterMedia()}


def media_targets(targets: list[UpstreamTarget]) -> list[UpstreamTarget]:
    """The upstreams whose provider generates media, in the order given."""
    return [target for target in targets if target.provider in _media_providers]


def media_provider_for(target: UpstreamTarget) -> MediaProvider:
    try:
        return _media_providers[target.provider]
    except KeyError:
        raise LookupError(f"no media provider named {target.provider!r}") from None
