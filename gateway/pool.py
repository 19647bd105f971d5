"""The upstream pool: which upstreams may serve a request, in what order, and their health."""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from accounts.db_thread import run_in_db_thread
from gateway.models import Upstream, UpstreamState
from gateway.providers.base import FailureKind, UpstreamFailure, UpstreamTarget

_QUOTA_COOLDOWN = 3600.0
_RATE_COOLDOWN_FIRST = 10.0
_RATE_COOLDOWN_MAX = 300.0


@dataclass(frozen=True, slots=True)
class PoolEntry:
    target: UpstreamTarget
    state: str
    cooldown_until: float | None  # Unix time
    consecutive_failures: int

    def available(self, now: float) -> bool:
        if self.state == UpstreamState.HEALTHY:
            return True
        # A cooled upstream is tried again once its time is up.
        return self.state == UpstreamState.COOLING and (self.cooldown_until or 0) <= now


_entries: list[PoolEntry] = []
_loaded_at = -1e9


def entry_of(upstream: Upstream) -> PoolEntry:
    return PoolEntry(
        target=UpstreamTarget(
            id=upstream.pk,
            label=upstream.label,
            provider=upstream.provider,
            base_url=upstream.base_url.rstrip("/"),
            token=upstream.token,
            account=upstream.account_name,
            weight=upstream.weight,
            max_concurrency=upstream.max_concurrency,
            priority=upstream.priority,
            models=tuple(model.lower() for model in upstream.models),
        ),
        state=upstream.state,
        cooldown_until=upstream.cooldown_until.timestamp() if upstream.cooldown_until else None,
        consecutive_failures=upstream.consecutive_failures,
    )


def load_entries() -> list[PoolEntry]:
    return [entry_of(upstream) for upstream in Upstream.objects.filter(enabled=True)]


async def pool_entries() -> list[PoolEntry]:
    """The enabled upstreams, read at most every SETTINGS_CACHE_SECONDS."""
    global _entries, _loaded_at
    if time.monotonic() - _loaded_at > settings.SETTINGS_CACHE_SECONDS:
        _entries = await run_in_db_thread(load_entries)
        _loaded_at = time.monotonic()
    return _entries


def forget_pool() -> None:
    global _loaded_at
    _loaded_at = -1e9


def order_candidates(entries: list[PoolEntry], model: str, now: float) -> list[UpstreamTarget]:
    """Usable upstreams for `model`: higher priority first, weighted random within a tier."""
    usable = [e.target for e in entries if e.available(now) and e.target.serves(model)]

    def sort_key(target: UpstreamTarget) -> tuple[int, float]:
        # Efraimidis-Spirakis: u^(1/w) orders a tier so each leads with share w / sum(w).
        return (-target.priority, -(random.random() ** (1.0 / target.weight)))  # noqa: S311

    return sorted(usable, key=sort_key)


async def candidates(model: str) -> list[UpstreamTarget]:
    return order_candidates(await pool_entries(), model, time.time())


def _entry(upstream_id: int) -> PoolEntry | None:
    return next((e for e in _entries if e.target.id == upstream_id), None)


def needs_reset(upstream_id: int) -> bool:
    entry = _entry(upstream_id)
    return entry is not None and (
        entry.consecutive_failures > 0 or entry.state != UpstreamState.HEALTHY
    )


def record_success(upstream_id: int) -> None:
    Upstream.objects.filter(pk=upstream_id, enabled=True).update(
        state=UpstreamState.HEALTHY,
        consecutive_failures=0,
        cooldown_until=None,
        last_ok_at=timezone.now(),
    )
    _remember(upstream_id)


def record_failure(upstream_id: int, failure: UpstreamFailure) -> None:
    """Count a failure before the first byte and move the upstream's state (DESIGN 10)."""
    kind = failure.kind
    if kind.is_clients_fault or kind is FailureKind.FORBIDDEN_MODEL:
        return
    rows = Upstream.objects.filter(pk=upstream_id)
    rows.update(consecutive_failures=F("consecutive_failures") + 1, last_error=failure.message)
    upstream = rows.first()
    if upstream is None:
        return
    cooldown = _cooldown(kind, failure, upstream.consecutive_failures)
    if kind is FailureKind.AUTH:
        rows.update(state=UpstreamState.DISABLED)
    elif cooldown is not None:
        until = timezone.now() + dt.timedelta(seconds=cooldown)
        rows.update(state=UpstreamState.COOLING, cooldown_until=until)
    _remember(upstream_id)


def _cooldown(kind: FailureKind, failure: UpstreamFailure, failures: int) -> float | None:
    if kind is FailureKind.QUOTA:
        return _QUOTA_COOLDOWN
    if kind is FailureKind.RATE_LIMITED:
        if failure.retry_after is not None:
            return failure.retry_after
        return float(min(_RATE_COOLDOWN_FIRST * 2 ** max(failures - 1, 0), _RATE_COOLDOWN_MAX))
    if failures >= settings.UPSTREAM_FAILURES_TO_COOL:
        return float(settings.UPSTREAM_COOLDOWN)
    return None


def _remember(upstream_id: int) -> None:
    """Put the upstream's new state into this process's copy of the pool."""
    global _entries
    upstream = Upstream.objects.filter(pk=upstream_id).first()
    kept = [e for e in _entries if e.target.id != upstream_id]
    if upstream is not None and upstream.enabled:
        kept.append(entry_of(upstream))
    _entries = kept


async def mark_failure(target: UpstreamTarget, failure: UpstreamFailure) -> None:
    if not (failure.kind.is_clients_fault or failure.kind is FailureKind.FORBIDDEN_MODEL):
        await run_in_db_thread(record_failure, target.id, failure)


async def mark_success(target: UpstreamTarget) -> None:
    if needs_reset(target.id):
        await run_in_db_thread(record_success, target.id)
