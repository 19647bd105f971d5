"""The upstream pool as the operator's overview shows it: state, last error, cooldown."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from gateway.models import Upstream, UpstreamState


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    label: str
    provider: str
    account: str
    enabled: bool
    state: str
    weight: int
    priority: int
    max_concurrency: int
    consecutive_failures: int
    last_error: str
    last_ok_at: dt.datetime | None
    cooldown_until: dt.datetime | None
    cooling_seconds_left: int | None

    @property
    def shown_state(self) -> str:
        """What the pool does with it now: a disabled flag wins, a finished cooldown is over."""
        if not self.enabled:
            return UpstreamState.DISABLED
        if self.state == UpstreamState.COOLING and not self.cooling_seconds_left:
            return UpstreamState.HEALTHY
        return self.state


def upstream_health(*, now: dt.datetime) -> list[UpstreamHealth]:
    """Every upstream, best tier first, as the overview lists it."""
    rows = Upstream.objects.order_by("-priority", "label")
    return [_health_of(upstream, now) for upstream in rows]


def _health_of(upstream: Upstream, now: dt.datetime) -> UpstreamHealth:
    left = None
    if upstream.cooldown_until is not None and upstream.cooldown_until > now:
        left = int((upstream.cooldown_until - now).total_seconds()) + 1
    return UpstreamHealth(
        label=upstream.label,
        provider=upstream.get_provider_display(),
        account=upstream.account_name,
        enabled=upstream.enabled,
        state=upstream.state,
        weight=upstream.weight,
        priority=upstream.priority,
        max_concurrency=upstream.max_concurrency,
        consecutive_failures=upstream.consecutive_failures,
        last_error=upstream.last_error,
        last_ok_at=upstream.last_ok_at,
        cooldown_until=upstream.cooldown_until,
        cooling_seconds_left=left,
    )


def state_counts(pool: list[UpstreamHealth]) -> dict[str, int]:
    """How many upstreams are in each state, every state named even at zero."""
    counted = Counter(entry.shown_state for entry in pool)
    return {state: counted.get(state, 0) for state in UpstreamState.values}
