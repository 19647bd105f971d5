"""Metering in memory while a request runs, and its one ledger row at the end."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import ApiKey, UsageDaily, UsageLog, UsageStatus
from gateway.limits import Grant
from gateway.models import Upstream
from gateway.providers.base import Usage
from gateway.tokens import count_messages, count_text

# Write an upstream's last_ok_at at most this often: it is a dashboard hint, not a counter.
_LAST_OK_EVERY = 60.0
_last_ok_written: dict[int, float] = {}
_last_used_written: dict[int, float] = {}


@dataclass(slots=True)
class UsageMeter:
    """What one request used, counted as it streams; nothing here touches the database."""

    request_id: str
    key_id: int
    user_id: int
    key_prefix: str
    endpoint: str
    model: str
    stream: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    created: dt.datetime = field(default_factory=timezone.now)
    first_token_at: float | None = None
    upstream_id: int | None = None
    upstream_label: str = ""
    upstream_model: str = ""
    reported: Usage | None = None
    delivered: list[str] = field(default_factory=list)
    recorded: bool = False
    grant: Grant | None = None  # limits held while the request runs

    def add_delivered(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.delivered.append(text)

    def usage(self, *, complete: bool) -> tuple[Usage, bool]:
        """(usage, estimated): the upstream's figure for a complete answer, else counted."""
        if self.reported is not None and complete:
            return self.reported, False
        prompt = (
            self.reported.prompt_tokens
            if self.reported is not None
            else count_messages(self.messages)
        )
        completion = count_text("".join(self.delivered))
        cents = self.reported.usd_cents if self.reported is not None else None
        return Usage(prompt, completion, cents), True

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return int((self.first_token_at - self.started) * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: UsageStatus
    http_status: int
    usage: Usage
    estimated: bool = False
    error: str = ""


def no_usage() -> Usage:
    return Usage(0, 0)


def record_usage(meter: UsageMeter, outcome: Outcome) -> UsageLog:
    """Write the request's ledger row and its daily rollup in one transaction."""
    usage = outcome.usage
    with transaction.atomic():
        row = UsageLog.objects.create(
            created=meter.created,
            request_id=meter.request_id,
            key_id=meter.key_id,
            user_id=meter.user_id,
            endpoint=meter.endpoint,
            model=meter.model,
            upstream_model=meter.upstream_model,
            upstream_id=meter.upstream_id,
            stream=meter.stream,
            status=outcome.status,
            http_status=outcome.http_status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            usage_estimated=outcome.estimated,
            usd_cents=usage.usd_cents,
            latency_ms=meter.elapsed_ms(),
            ttft_ms=meter.ttft_ms(),
            error=outcome.error[:300],
        )
        _add_to_daily(meter, outcome)
    if outcome.status == UsageStatus.OK and meter.upstream_id is not None:
        _note_upstream_ok(meter.upstream_id)
    _note_key_used(meter.key_id)
    return row


def _add_to_daily(meter: UsageMeter, outcome: Outcome) -> None:
    failed = outcome.status in {UsageStatus.UPSTREAM_ERROR, UsageStatus.INVALID_REQUEST}
    increments = {
        "requests": F("requests") + 1,
        "prompt_tokens": F("prompt_tokens") + outcome.usage.prompt_tokens,
        "completion_tokens": F("completion_tokens") + outcome.usage.completion_tokens,
        "total_tokens": F("total_tokens") + outcome.usage.total_tokens,
        "errors": F("errors") + int(failed),
        "rejected": F("rejected") + int(outcome.status == UsageStatus.REJECTED),
    }
    day = meter.created.date()
    rows = UsageDaily.objects.filter(key_id=meter.key_id, model=meter.model, day=day)
    if rows.update(**increments):
        return
    try:
        with transaction.atomic():
            UsageDaily.objects.create(
                key_id=meter.key_id, user_id=meter.user_id, model=meter.model, day=day
            )
    except IntegrityError:
        pass  # another worker created it first
    rows.update(**increments)


def _note_key_used(key_id: int) -> None:
    # last_used_at is a hint for people: write it at most once a minute per key.
    now = time.monotonic()
    if now - _last_used_written.get(key_id, -_LAST_OK_EVERY) < _LAST_OK_EVERY:
        return
    _last_used_written[key_id] = now
    ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())


def _note_upstream_ok(upstream_id: int) -> None:
    now = time.monotonic()
    if now - _last_ok_written.get(upstream_id, -_LAST_OK_EVERY) < _LAST_OK_EVERY:
        return
    _last_ok_written[upstream_id] = now
    Upstream.objects.filter(pk=upstream_id).update(last_ok_at=timezone.now())
