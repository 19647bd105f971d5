"""The upstream pool: which upstreams may serve a request, in what order, and their health."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from accounts.db_thread import run_in_db_thread, run_shared_in_db_thread
from gateway.counters import (
    CountersUnavailable,
    forget,
    keep_alive,
    new_holder,
    release_slot,
    take_slot,
)
from gateway.errors import upstream_busy
from gateway.models import Upstream, UpstreamState
from gateway.providers.base import (
    ChatStream,
    Event,
    FailureKind,
    UpstreamFailure,
    UpstreamTarget,
)

logger = logging.getLogger("gateway.pool")
T = TypeVar("T")

QUOTA_COOLDOWN = 3600.0
RATE_COOLDOWN_FIRST = 10.0
RATE_COOLDOWN_MAX = 300.0
LIMIT_FAILURES = (FailureKind.RATE_LIMITED.value, FailureKind.QUOTA.value)
QUEUE_POLL_FIRST = 0.02
QUEUE_POLL_MAX = 0.25


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
_have_copy = False


def entry_of(upstream: Upstream, account_cap: int | None = None) -> PoolEntry:
    return PoolEntry(
        target=UpstreamTarget(
            id=upstream.pk,
            label=upstream.label,
            provider=upstream.provider,
            base_url=upstream.base_url.rstrip("/"),
            token=upstream.token,
            account=upstream.account_name,
            weight=upstream.weight,
            max_concurrency=account_cap or upstream.max_concurrency,
            priority=upstream.priority,
            models=tuple(model.lower() for model in upstream.models),
        ),
        state=upstream.state,
        cooldown_until=upstream.cooldown_until.timestamp() if upstream.cooldown_until else None,
        consecutive_failures=upstream.consecutive_failures,
    )


def load_entries() -> list[PoolEntry]:
    upstreams = list(Upstream.objects.filter(enabled=True))
    # Tokens of one account share its cap: the smallest one set on any of them holds.
    caps: dict[str, int] = {}
    for upstream in upstreams:
        name = upstream.account_name
        caps[name] = min(caps.get(name, upstream.max_concurrency), upstream.max_concurrency)
    return [entry_of(upstream, caps[upstream.account_name]) for upstream in upstreams]


async def pool_entries() -> list[PoolEntry]:
    """The enabled upstreams, read at most every SETTINGS_CACHE_SECONDS."""
    global _entries, _loaded_at, _have_copy
    if time.monotonic() - _loaded_at > settings.SETTINGS_CACHE_SECONDS:
        try:
            _entries = await run_shared_in_db_thread("pool", load_entries)
        except DatabaseError:
            if not _have_copy:
                raise
            return _entries  # the last copy serves while the database is away
        _loaded_at, _have_copy = time.monotonic(), True
        _weights.keep({entry.target.id for entry in _entries})
    return _entries


def forget_pool() -> None:
    global _loaded_at
    _loaded_at = -1e9


# --- choosing --------------------------------------------------------------------------


class SmoothWeights:
    """Smooth weighted round-robin (nginx's): shares match the weights, without long runs.

    Each pick adds every candidate's weight to its credit and takes the total back from
    the one chosen. Weighted random order gave runs of 30+ on a weight-7 upstream out of
    10 and 20-request windows without a weight-2 one; this never does.
    """

    def __init__(self) -> None:
        self._credit: dict[int, int] = {}

    def order(self, tier: Sequence[UpstreamTarget]) -> list[UpstreamTarget]:
        """The tier, the next pick first, without charging anyone."""
        return sorted(tier, key=lambda t: -(self._credit.get(t.id, 0) + t.weight))

    def charge(self, chosen: UpstreamTarget, tier: Sequence[UpstreamTarget]) -> None:
        for target in tier:
            self._credit[target.id] = self._credit.get(target.id, 0) + target.weight
        self._credit[chosen.id] -= sum(target.weight for target in tier)

    def refund(self, chosen: UpstreamTarget, tier: Sequence[UpstreamTarget]) -> None:
        """Undo `charge` exactly."""
        self._credit[chosen.id] += sum(target.weight for target in tier)
        for target in tier:
            self._credit[target.id] -= target.weight

    def keep(self, ids: set[int]) -> None:
        self._credit = {key: value for key, value in self._credit.items() if key in ids}


_weights = SmoothWeights()


def order_candidates(targets: Sequence[UpstreamTarget]) -> list[UpstreamTarget]:
    """Higher priority tiers first; within a tier, the smooth weighted order."""
    tiers = sorted({target.priority for target in targets}, reverse=True)
    return [
        target
        for priority in tiers
        for target in _weights.order([t for t in targets if t.priority == priority])
    ]


def usable(entries: list[PoolEntry], model: str, now: float) -> list[UpstreamTarget]:
    return [e.target for e in entries if e.available(now) and e.target.serves(model)]


async def candidates(model: str) -> list[UpstreamTarget]:
    """Usable upstreams for `model`, in the order they would be chosen now."""
    return order_candidates(usable(await pool_entries(), model, time.time()))


def slot_scope(target: UpstreamTarget) -> str:
    return f"upstream:{target.account}"


class LocalSlots:
    """Account slots held in this process while the shared counters cannot be reached.

    Keys without limits are still served during a Redis outage (DESIGN.md 3): the cap then
    holds exactly within a process, and across processes may be passed by the slots that
    the others hold; Puter's 429s, if any, cool the account as usual.
    """

    PREFIX = "local:"

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    def take(self, scope: str, limit: int) -> str | None:
        held = self._held.setdefault(scope, set())
        if len(held) >= limit:
            return None
        holder = f"{self.PREFIX}{new_holder()}"
        held.add(holder)
        return holder

    def release(self, scope: str, holder: str) -> None:
        self._held.get(scope, set()).discard(holder)


_local_slots = LocalSlots()


async def take_account_slot(target: UpstreamTarget) -> str | None:
    """A slot of the target's account, or None when the account is at its cap."""
    scope = slot_scope(target)
    try:
        return await take_slot(scope, target.max_concurrency)
    except CountersUnavailable:
        return _local_slots.take(scope, target.max_concurrency)


@dataclass(slots=True)
class Lease:
    """A slot held on an upstream's account for the length of one upstream call."""

    target: UpstreamTarget
    holder: str | None  # None once given back

    def hand_over(self) -> tuple[str, str] | None:
        """The shared slot as (scope, holder), for the caller to give back with others.

        The lease counts as given back from now; a slot held in this process goes at once.
        """
        holder, self.holder = self.holder, None
        if holder is None:
            return None
        scope = slot_scope(self.target)
        if holder.startswith(LocalSlots.PREFIX):
            _local_slots.release(scope, holder)
            return None
        forget(holder)
        return scope, holder

    async def release(self) -> None:
        holder, self.holder = self.holder, None
        if holder is None:
            return
        scope = slot_scope(self.target)
        if holder.startswith(LocalSlots.PREFIX):
            _local_slots.release(scope, holder)
            return
        # An unreleased slot expires by itself: never let its release fail a request.
        with contextlib.suppress(CountersUnavailable):
            await release_slot(scope, holder)


class HeldStream:
    """An upstream stream that gives its account's slot back once it is closed."""

    def __init__(self, stream: ChatStream, lease: Lease) -> None:
        self._stream = stream
        self._lease = lease

    @property
    def buffered(self) -> bool:
        return self._stream.buffered

    def events(self) -> AsyncIterator[Event]:
        return self._stream.events()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._lease.release()


async def call_on(
    lease: Lease,
    call: Callable[[UpstreamTarget, str], Awaitable[T]],
    model: str,
    *,
    hold: Callable[[T, Lease], T] | None = None,
) -> T:
    """Call the lease's upstream for `model` and mark its health; give the slot back unless
    `hold` binds it to the value, to go back when that is closed."""
    target, handed = lease.target, False
    try:
        value = await call(target, model)
        await mark_success(target)
        if hold is not None:
            value, handed = hold(value, lease), True
        return value
    except UpstreamFailure as failure:
        await mark_failure(target, failure)
        raise
    finally:
        if not handed:
            await lease.release()


def same_service(one: UpstreamTarget, other: UpstreamTarget) -> bool:
    """Tokens of one provider at one base URL see the same models."""
    return (one.provider, one.base_url) == (other.provider, other.base_url)


@dataclass(slots=True)
class Reservation:
    """The first choice's account slot, to be taken in admission's database step.

    With the counters in the database, taking it there saves the request a thread hop
    and a transaction of its own.
    """

    target: UpstreamTarget
    tier: list[UpstreamTarget]
    holder: str = field(default_factory=new_holder)
    taken: bool = False

    @property
    def scope(self) -> str:
        return slot_scope(self.target)


def reserve_first(targets: Sequence[UpstreamTarget]) -> Reservation | None:
    """Charge the first choice now, as `acquire` would; its slot is taken by admission."""
    order = order_candidates(targets)
    if not order:
        return None
    first = order[0]
    tier = [t for t in targets if t.priority == first.priority]
    _weights.charge(first, tier)
    return Reservation(first, tier)


def settle(reservation: Reservation) -> Lease | None:
    """The lease of a slot admission took; else the choice is undone."""
    if reservation.taken:
        keep_alive(reservation.scope, reservation.holder)
        return Lease(reservation.target, reservation.holder)
    _weights.refund(reservation.target, reservation.tier)
    return None


async def acquire(targets: Sequence[UpstreamTarget], *, deadline: float) -> Lease:
    """A slot on the first free upstream in choosing order; wait while all are full.

    At `deadline` (time.monotonic()) raise 503 `upstream_busy`.
    """
    delay = QUEUE_POLL_FIRST
    while True:
        lease = await _take_first_free(targets)
        if lease is not None:
            return lease
        left = deadline - time.monotonic()
        if left <= 0:
            raise upstream_busy()
        # The last wait ends at the deadline: the caller waits the whole queue timeout.
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 1.5, QUEUE_POLL_MAX)


async def _take_first_free(targets: Sequence[UpstreamTarget]) -> Lease | None:
    order = order_candidates(targets)
    if not order:
        return None
    # Charge the first pick before awaiting, so that concurrent requests see it taken.
    first = order[0]
    tier = [t for t in targets if t.priority == first.priority]
    _weights.charge(first, tier)
    try:
        for target in order:
            holder = await take_account_slot(target)
            if holder is None:
                continue
            if target is not first:
                _weights.refund(first, tier)
                _weights.charge(target, [t for t in targets if t.priority == target.priority])
            return Lease(target, holder)
    except BaseException:
        _weights.refund(first, tier)
        raise
    _weights.refund(first, tier)
    return None


# --- health ----------------------------------------------------------------------------


def _entry(upstream_id: int) -> PoolEntry | None:
    return next((e for e in _entries if e.target.id == upstream_id), None)


def needs_reset(upstream_id: int) -> bool:
    entry = _entry(upstream_id)
    return entry is not None and (
        entry.consecutive_failures > 0 or entry.state != UpstreamState.HEALTHY
    )


def record_success(upstream_id: int, *, proves_limits: bool = True) -> bool:
    """Mark the upstream healthy; whether it was (or already is).

    A call that does not go through the account's chat limits (listing the models) ends
    no cooling that a rate limit or spent credits began.
    """
    rows = Upstream.objects.filter(pk=upstream_id, enabled=True)
    if not proves_limits:
        rows = rows.exclude(state=UpstreamState.COOLING, last_failure__in=LIMIT_FAILURES)
    updated = rows.update(
        state=UpstreamState.HEALTHY,
        consecutive_failures=0,
        cooldown_until=None,
        last_ok_at=timezone.now(),
    )
    _remember(upstream_id)
    return bool(updated)


def record_failure(upstream_id: int, failure: UpstreamFailure) -> None:
    """Count a failure before the first byte and move the upstream's state (DESIGN 10)."""
    kind = failure.kind
    if kind.is_clients_fault or kind is FailureKind.FORBIDDEN_MODEL:
        return
    now = timezone.now()
    rows = Upstream.objects.filter(pk=upstream_id)
    rows.update(
        consecutive_failures=F("consecutive_failures") + 1,
        last_error=failure.message[:300],
        last_error_at=now,
        last_failure=kind.value,
    )
    upstream = rows.first()
    if upstream is None:
        return
    cooldown = cooldown_for(failure, upstream.consecutive_failures)
    if kind is FailureKind.AUTH:
        rows.update(state=UpstreamState.DISABLED, cooldown_until=None)
    elif cooldown is not None:
        until = now + dt.timedelta(seconds=cooldown)
        rows.update(state=UpstreamState.COOLING, cooldown_until=until)
    _remember(upstream_id)
    logger.warning(
        "upstream marked",
        extra={"upstream": upstream.label, "failure": kind.value, "cooldown": cooldown},
    )


def cooldown_for(failure: UpstreamFailure, failures: int) -> float | None:
    """Seconds of cooling after the `failures`-th failure in a row, or None to stay."""
    kind = failure.kind
    if kind is FailureKind.QUOTA:
        return QUOTA_COOLDOWN
    if kind is FailureKind.RATE_LIMITED:
        if failure.retry_after is not None:
            return failure.retry_after
        return float(min(RATE_COOLDOWN_FIRST * 2 ** max(failures - 1, 0), RATE_COOLDOWN_MAX))
    if failures >= settings.UPSTREAM_FAILURES_TO_COOL:
        return float(settings.UPSTREAM_COOLDOWN)
    return None


def _remember(upstream_id: int) -> None:
    """Put the upstream's new state into this process's copy of the pool."""
    global _entries
    upstream = Upstream.objects.filter(pk=upstream_id).first()
    kept = [e for e in _entries if e.target.id != upstream_id]
    if upstream is not None and upstream.enabled:
        cap = next((e.target.max_concurrency for e in _entries if e.target.id == upstream_id), None)
        kept.append(entry_of(upstream, cap))
    _entries = kept


async def mark_failure(target: UpstreamTarget, failure: UpstreamFailure) -> None:
    if not (failure.kind.is_clients_fault or failure.kind is FailureKind.FORBIDDEN_MODEL):
        with _health_unrecorded(target):
            await run_in_db_thread(record_failure, target.id, failure)


async def mark_success(target: UpstreamTarget) -> None:
    if needs_reset(target.id):
        with _health_unrecorded(target):
            await run_in_db_thread(record_success, target.id)


@contextlib.contextmanager
def _health_unrecorded(target: UpstreamTarget) -> Iterator[None]:
    """Health is a hint: a database that cannot take it must not fail the call."""
    try:
        yield
    except DatabaseError as exc:
        logger.warning(
            "upstream health not recorded",
            extra={"upstream": target.label, "reason": type(exc).__name__},
        )
