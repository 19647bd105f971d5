"""Probing upstreams: the cheap call that proves a token works, on demand and periodically.

`check_upstreams` and the admin's "Test now" probe every enabled upstream they are given.
Each server process starts a prober on its first request: every UPSTREAM_PROBE_INTERVAL it
keeps this process's model catalogue fresh and, when elected, probes the cooling upstreams
(and the disabled ones every few minutes), so that they come back without waiting for
traffic. The election goes through the shared counters: one round per interval across
every worker and instance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from accounts.db_thread import run_in_db_thread
from gateway.catalogue import models_age, refresh_models
from gateway.counters import CountersUnavailable, hit
from gateway.models import Upstream, UpstreamState
from gateway.pool import Lease, load_entries, record_failure, record_success, take_account_slot
from gateway.providers.base import FailureKind, UpstreamFailure, UpstreamTarget
from gateway.providers.registry import plugin_for
from gateway.upstream_client import upstream_client

logger = logging.getLogger("gateway.prober")

PROBE_MESSAGES = [{"role": "user", "content": "Say OK."}]
# A disabled upstream failed its credentials: ask again this seldom, in case they recover.
DISABLED_PROBE_EVERY = 300.0
ELECTION_SCOPE = "upstream-prober"


@dataclass(frozen=True, slots=True)
class ProbeReport:
    label: str
    provider: str
    account: str
    state: str  # after the probe
    result: str  # "ok", "busy" (its account is at its cap), or why it failed
    ms: int | None


async def probe(client: httpx.AsyncClient, target: UpstreamTarget) -> None:
    """The provider's cheap call; raise UpstreamFailure as a real call would."""
    plugin = plugin_for(target)
    if plugin.probe == "chat":
        request = {"model": plugin.probe_model, "messages": PROBE_MESSAGES, "max_tokens": 1}
        await plugin.provider.complete(client, target, request)
    else:
        await plugin.provider.list_models(client, target)


async def probe_target(client: httpx.AsyncClient, target: UpstreamTarget) -> tuple[str, int | None]:
    """Probe one upstream inside its account's cap and record the outcome: (result, ms)."""
    holder = await take_account_slot(target)
    if holder is None:
        return "busy", None  # its account is serving traffic, which tests it anyway
    started = time.perf_counter()
    failure: UpstreamFailure | None = None
    try:
        await asyncio.wait_for(probe(client, target), settings.UPSTREAM_PROBE_TIMEOUT)
    except UpstreamFailure as exc:
        failure = exc
    except TimeoutError:
        failure = UpstreamFailure(FailureKind.TIMEOUT, "the probe timed out", status=504)
    finally:
        await Lease(target, holder).release()
    ms = int((time.perf_counter() - started) * 1000)
    return await _record(target, failure), ms


async def _record(target: UpstreamTarget, failure: UpstreamFailure | None) -> str:
    if failure is not None and not (
        failure.kind.is_clients_fault or failure.kind is FailureKind.FORBIDDEN_MODEL
    ):
        await run_in_db_thread(record_failure, target.id, failure)
        return f"{failure.kind.value}: {failure.message}"
    # An answer about the call itself (say, an unknown probe model) still passed the token.
    chat = plugin_for(target).probe == "chat"
    if await run_in_db_thread(record_success, target.id, proves_limits=chat):
        return "ok"
    return "ok, still cooling: a model listing proves no rate limit or credit"


async def probe_upstreams(
    client: httpx.AsyncClient, *, ids: Collection[int] | None = None
) -> list[ProbeReport]:
    """Probe the enabled upstreams (those of `ids` only, when given), all at once."""
    entries = [
        entry
        for entry in await run_in_db_thread(load_entries)
        if ids is None or entry.target.id in ids
    ]
    results = await asyncio.gather(*(probe_target(client, e.target) for e in entries))
    states = await run_in_db_thread(_states, [e.target.id for e in entries])
    reports = [
        ProbeReport(
            e.target.label,
            e.target.provider,
            e.target.account,
            states.get(e.target.id, "gone"),
            result,
            ms,
        )
        for e, (result, ms) in zip(entries, results, strict=True)
    ]
    for report in reports:
        logger.info(
            "upstream probed",
            extra={
                "upstream": report.label,
                "state": report.state,
                "result": report.result,
                "ms": report.ms,
            },
        )
    return reports


def _states(ids: list[int]) -> dict[int, str]:
    return dict(Upstream.objects.filter(pk__in=ids).values_list("pk", "state"))


def due_ids() -> list[int]:
    """The upstreams a periodic round probes: cooling ones, and disabled ones now and then."""
    disabled_long = timezone.now() - dt.timedelta(seconds=DISABLED_PROBE_EVERY)
    due = Q(state=UpstreamState.COOLING) | Q(
        Q(last_error_at__isnull=True) | Q(last_error_at__lt=disabled_long),
        state=UpstreamState.DISABLED,
    )
    return list(Upstream.objects.filter(due, enabled=True).values_list("pk", flat=True))


def check_now(ids: Collection[int] | None = None) -> list[ProbeReport]:
    """Probe now, from synchronous code (a command, the admin), with a client of its own."""
    return async_to_sync(_check_with_own_client)(ids)


async def _check_with_own_client(ids: Collection[int] | None) -> list[ProbeReport]:
    timeout = httpx.Timeout(
        settings.UPSTREAM_PROBE_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT
    )
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        return await probe_upstreams(client, ids=ids)


# --- the periodic prober ------------------------------------------------------------------

_task: asyncio.Task[None] | None = None


def ensure_prober() -> None:
    """Start this process's prober if it is not running in this event loop yet."""
    global _task
    if settings.UPSTREAM_PROBE_INTERVAL <= 0:
        return
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_probe_forever(), name="upstream-prober")


async def _probe_forever() -> None:
    interval = settings.UPSTREAM_PROBE_INTERVAL
    while True:
        await asyncio.sleep(interval)
        try:
            await probe_round(interval)
        except Exception:
            logger.exception("upstream probe round failed")


async def probe_round(interval: float) -> list[ProbeReport]:
    """One tick: probe what is due if this process wins the round; refresh the catalogue."""
    reports: list[ProbeReport] = []
    try:
        # A window a little shorter than the interval: the same winner may win every round.
        elected = (await hit(ELECTION_SCOPE, 1, interval * 0.9)).admitted
    except CountersUnavailable:
        elected = False
    if elected:
        due = await run_in_db_thread(due_ids)
        if due:
            reports = await probe_upstreams(upstream_client(), ids=set(due))
    if models_age() > settings.MODELS_CACHE_SECONDS / 2:
        await refresh_models()
    return reports
