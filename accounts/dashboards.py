"""What the dashboards show, read from the daily rollup only: never a scan of the ledger.

Every query here filters `UsageDaily` by day (and by user or key), so its cost follows the
number of (key, model, day) rows in the range, not the number of requests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from accounts.models import ApiKey, UsageDaily, UserLimits
from accounts.spending import period_bounds

MAX_SPAN_DAYS = 366
TOP = 10

_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "rejected")
# Aliased: an annotation may not take the name of a model field.
_SUMS = {f"sum_{name}": Coalesce(Sum(name), 0) for name in _FIELDS}


@dataclass(frozen=True, slots=True)
class DateSpan:
    """Whole UTC days from `start` to `end`, both included."""

    start: dt.date
    end: dt.date

    @classmethod
    def last(cls, days: int, *, today: dt.date) -> DateSpan:
        return cls(today - dt.timedelta(days=days - 1), today)

    @property
    def days(self) -> list[dt.date]:
        count = (self.end - self.start).days + 1
        return [self.start + dt.timedelta(days=offset) for offset in range(count)]


@dataclass(frozen=True, slots=True)
class Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    errors: int = 0
    rejected: int = 0

    @property
    def error_percent(self) -> float | None:
        return 100 * self.errors / self.requests if self.requests else None

    @property
    def refusal_percent(self) -> float | None:
        return 100 * self.rejected / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Slice:
    """One bar of a breakdown: a model, a key or a user, with its tally."""

    label: str
    tally: Tally


@dataclass(frozen=True, slots=True)
class UsageReport:
    span: DateSpan
    totals: Tally
    per_day: list[tuple[dt.date, Tally]]
    per_model: list[Slice]
    per_key: list[Slice]
    per_user: list[Slice]

    @property
    def empty(self) -> bool:
        return self.totals.requests == 0

    def chart_data(self) -> dict[str, Any]:
        """The figures the page's script draws, as plain JSON."""
        return {
            "days": [day.isoformat() for day, _tally in self.per_day],
            "per_day": [asdict(tally) for _day, tally in self.per_day],
            "per_model": [{"label": s.label, **asdict(s.tally)} for s in self.per_model],
            "per_key": [{"label": s.label, **asdict(s.tally)} for s in self.per_key],
            "per_user": [{"label": s.label, **asdict(s.tally)} for s in self.per_user],
        }


def daily_rows(
    *, span: DateSpan, user_id: int | None = None, key_id: int | None = None
) -> QuerySet[UsageDaily]:
    rows = UsageDaily.objects.filter(day__gte=span.start, day__lte=span.end)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    return rows


def _tally(row: Mapping[str, Any]) -> Tally:
    return Tally(*(int(row[f"sum_{name}"]) for name in _FIELDS))


def total_of(tallies: Iterable[Tally]) -> Tally:
    sums = [0] * len(_FIELDS)
    for tally in tallies:
        for index, name in enumerate(_FIELDS):
            sums[index] += getattr(tally, name)
    return Tally(*sums)


def tally_of(rows: QuerySet[UsageDaily]) -> Tally:
    return _tally(rows.aggregate(**_SUMS))


def per_day(rows: QuerySet[UsageDaily], span: DateSpan) -> list[tuple[dt.date, Tally]]:
    """Every day of the span, days without usage as zeros, so a chart's axis is true."""
    found = {row["day"]: _tally(row) for row in rows.values("day").annotate(**_SUMS)}
    return [(day, found.get(day, Tally())) for day in span.days]


def per_day_and_model(
    rows: QuerySet[UsageDaily], span: DateSpan
) -> tuple[list[tuple[dt.date, Tally]], dict[str, Tally]]:
    """Every day of the span (zeros included) and every model, from one scan."""
    days: dict[dt.date, list[Tally]] = {}
    models: dict[str, list[Tally]] = {}
    for row in rows.values("day", "model").annotate(**_SUMS):
        tally = _tally(row)
        days.setdefault(row["day"], []).append(tally)
        models.setdefault(row["model"], []).append(tally)
    return (
        [(day, total_of(days.get(day, ()))) for day in span.days],
        {model: total_of(tallies) for model, tallies in models.items()},
    )


def _ranked(tallies: dict[Any, Tally], limit: int | None) -> list[tuple[Any, Tally]]:
    """Most tokens first, then most requests; the first `limit` (None: all)."""
    ordered = sorted(
        tallies.items(), key=lambda item: (-item[1].total_tokens, -item[1].requests, item[0])
    )
    return ordered[:limit] if limit is not None else ordered


def key_label(prefix: str, name: str) -> str:
    return f"{prefix}… ({name})" if name else f"{prefix}…"


def per_key_and_user(
    rows: QuerySet[UsageDaily], *, limit: int | None = TOP
) -> tuple[list[Slice], list[Slice]]:
    """The top keys and the top users, from one scan grouped by key (a key has one user)."""
    keys: dict[int, Tally] = {}
    owners: dict[int, list[Tally]] = {}
    for row in rows.values("key_id", "user_id").annotate(**_SUMS):
        keys[row["key_id"]] = tally = _tally(row)
        owners.setdefault(row["user_id"], []).append(tally)
    users = {user_id: total_of(tallies) for user_id, tallies in owners.items()}
    top_keys, top_users = _ranked(keys, limit), _ranked(users, limit)
    labels = {
        pk: key_label(prefix, name)
        for pk, prefix, name in ApiKey.objects.filter(
            pk__in=[pk for pk, _t in top_keys]
        ).values_list("pk", "prefix", "name")
    }
    names = dict(
        User.objects.filter(pk__in=[pk for pk, _t in top_users]).values_list("pk", "username")
    )
    return (
        [Slice(labels[pk], tally) for pk, tally in top_keys],
        [Slice(names[pk], tally) for pk, tally in top_users],
    )


def _report(rows: QuerySet[UsageDaily], span: DateSpan, limit: int | None) -> UsageReport:
    """Two scans of the rollup in the span: by day and model, and by key (and so user)."""
    days, models = per_day_and_model(rows, span)
    keys, users = per_key_and_user(rows, limit=limit)
    return UsageReport(
        span=span,
        totals=total_of(tally for _day, tally in days),
        per_day=days,
        per_model=[Slice(model, tally) for model, tally in _ranked(models, limit)],
        per_key=keys,
        per_user=users,
    )


def user_usage(*, user_id: int, span: DateSpan, key_id: int | None = None) -> UsageReport:
    """One user's usage in the span (optionally one of their keys)."""
    report = _report(daily_rows(span=span, user_id=user_id, key_id=key_id), span, None)
    return replace(report, per_user=[])


def operator_usage(*, span: DateSpan, user_id: int | None = None) -> UsageReport:
    """Usage across users and keys (or one user's), with the top keys, models and users."""
    return _report(daily_rows(span=span, user_id=user_id), span, TOP)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """A token budget, what its current period spent and what remains."""

    label: str
    budget: int
    period: str
    spent: int
    resets_at: dt.datetime | None

    @property
    def remaining(self) -> int:
        return max(self.budget - self.spent, 0)

    @property
    def used_percent(self) -> int:
        return min(100, round(100 * self.spent / self.budget)) if self.budget else 100


def _spent(
    rows: QuerySet[UsageDaily], period: str, now: dt.datetime
) -> tuple[int, dt.datetime | None]:
    bounds = period_bounds(period, now)
    if bounds is not None:
        rows = rows.filter(day__gte=bounds[0])
    total = rows.aggregate(total=Coalesce(Sum("total_tokens"), 0))["total"]
    return int(total), bounds[1] if bounds else None


def budget_lines(*, user_id: int, now: dt.datetime) -> list[BudgetLine]:
    """The user's own budget, then each active key's, with what remains of each."""
    lines = []
    own = UserLimits.objects.filter(user_id=user_id, token_budget__isnull=False).first()
    if own is not None and own.token_budget is not None:
        spent, resets = _spent(UsageDaily.objects.filter(user_id=user_id), own.budget_period, now)
        lines.append(
            BudgetLine("All your keys", own.token_budget, own.budget_period, spent, resets)
        )
    keys = (
        ApiKey.objects.filter(user_id=user_id, revoked_at__isnull=True, token_budget__isnull=False)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("created")
    )
    for key in keys:
        assert key.token_budget is not None  # filtered above
        spent, resets = _spent(UsageDaily.objects.filter(key_id=key.pk), key.budget_period, now)
        label = key_label(key.prefix, key.name)
        lines.append(BudgetLine(label, key.token_budget, key.budget_period, spent, resets))
    return lines
