"""Which provider class speaks to an upstream: one entry per provider module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.providers.base import Provider, UpstreamTarget
from gateway.providers.openai import OpenAIProvider
from gateway.providers.puter import PuterProvider


@dataclass(frozen=True, slots=True)
class Plugin:
    """A provider, how operators see it, and the cheapest call that proves a token works."""

    provider: Provider
    label: str
    needs_base_url: bool = False  # False: the provider knows its default base URL
    # "models": listing the models needs the token. "chat": ask `probe_model` for one token.
    probe: Literal["models", "chat"] = "models"
    probe_model: str = ""


# The name is what Upstream.provider stores (at most 10 characters). Puter lists its models
# without a token (PUTER.md B 3): only a chat call tests the token, its credits and its
# account's chat rate limit together, as traffic will.
_plugins: dict[str, Plugin] = {
    "puter": Plugin(PuterProvider(), "Puter", probe="chat", probe_model="gpt-4o-mini"),
    "openai": Plugin(OpenAIProvider(), "OpenAI-compatible", needs_base_url=True),
}


def provider_choices() -> list[tuple[str, str]]:
    return [(name, plugin.label) for name, plugin in _plugins.items()]


def registered(name: str) -> Plugin | None:
    return _plugins.get(name)


def plugin_for(target: UpstreamTarget) -> Plugin:
    try:
        return _plugins[target.provider]
    except KeyError:
        raise LookupError(f"no provider named {target.provider!r}") from None


def provider_for(target: UpstreamTarget) -> Provider:
    return plugin_for(target).provider
