"""Liveness, readiness and the Prometheus scrape: plain async views on the lean API handler."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from accounts.db_thread import run_in_db_thread
from gateway.auth_throttle import note_auth_failure, refuse_if_throttled
from gateway.errors import OpenAIError
from gateway.metrics import UpstreamSnapshot, exposition
from gateway.models import Upstream, UpstreamState
from gateway.redis_clients import redis_client

logger = logging.getLogger("gateway.probes")
T = TypeVar("T")

# A check that takes longer than this counts as failed: a probe must answer promptly.
CHECK_TIMEOUT = 5.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _json(payload: object, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(payload), status=status, content_type="application/json")


@require_safe
async def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers; nothing else is asked."""
    return _json({"status": "ok"})


@require_safe
async def readyz(request: HttpRequest) -> HttpResponse:
    """200 when this instance can serve: database, Redis if configured, an upstream."""
    checks: dict[str, str] = {}
    checks["database"], checks["upstreams"] = await _bounded(
        run_in_db_thread(check_database_and_pool), ("timed out", "unknown")
    )
    if settings.REDIS_URL:
        checks["redis"] = await _bounded(check_redis(settings.REDIS_URL), "timed out")
    ready = all(value == "ok" for value in checks.values())
    return _json(
        {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


async def _bounded(check: Awaitable[T], late: T) -> T:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await check
    except TimeoutError:
        return late


def check_database_and_pool() -> tuple[str, str]:
    """One query answers both: the database is up, and an upstream may be used."""
    try:
        usable = (
            Upstream.objects.filter(enabled=True).exclude(state=UpstreamState.DISABLED).exists()
        )
    except Exception as exc:  # any failure means "not ready", never a 500
        return f"failed ({type(exc).__name__})", "unknown"
    return "ok", "ok" if usable else "no enabled upstream that is not disabled"


async def check_redis(url: str) -> str:
    client = redis_client(url, timeout=2.0)
    try:
        await client.ping()
    except Exception as exc:  # any failure means "not ready"
        # The class name only: a Redis error message may carry the URL and its password.
        return f"failed ({type(exc).__name__})"
    finally:
        await client.aclose()
    return "ok"


@require_safe
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for the operator's scraper only (Bearer METRICS_TOKEN)."""
    refusal = await _scraper_refusal(request)
    if refusal is not None:
        return refusal.response()
    try:
        upstreams = await run_in_db_thread(snapshot_upstreams)
    except Exception:  # the process's own metrics still matter without the pool
        logger.warning("upstream states not read for /metrics", exc_info=True)
        upstreams = []
    return HttpResponse(exposition(upstreams), content_type=PROMETHEUS_TEXT)


async def _scraper_refusal(request: HttpRequest) -> OpenAIError | None:
    """Why this caller may not scrape, or None: off without a token, Bearer it otherwise."""
    token = settings.METRICS_TOKEN
    if not token:
        return OpenAIError(404, "Not found.", code="not_found")
    client_ip = request.META.get("REMOTE_ADDR", "")
    try:
        await refuse_if_throttled(client_ip)
    except OpenAIError as throttled:
        return throttled
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    ):
        return None
    await note_auth_failure(client_ip)
    return OpenAIError(
        401, "Pass the metrics token as 'Authorization: Bearer ...'.", code="invalid_api_key"
    )


def snapshot_upstreams() -> list[UpstreamSnapshot]:
    rows = Upstream.objects.order_by("label").values_list("label", "state", "enabled")
    return [UpstreamSnapshot(label, state, enabled) for label, state, enabled in rows]
