"""The portal's home: what the signed-in user spent today and this month, and their keys."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.dashboards import DateSpan, budget_lines, daily_rows, per_day, tally_of
from accounts.portal_keys import is_active, own_keys
from accounts.views_portal import portal_user

# The home page's small chart: the last two weeks.
RECENT_DAYS = 14


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    user = portal_user(request)
    now = timezone.now()
    today = now.astimezone(dt.UTC).date()
    recent = DateSpan.last(RECENT_DAYS, today=today)
    month = DateSpan(today.replace(day=1), today)
    days = per_day(daily_rows(span=recent, user_id=user.pk), recent)
    keys = own_keys(user=user)
    context = {
        "today": tally_of(daily_rows(span=DateSpan(today, today), user_id=user.pk)),
        "month": tally_of(daily_rows(span=month, user_id=user.pk)),
        "recent_empty": not any(tally.requests for _day, tally in days),
        "recent_chart": {
            "days": [day.isoformat() for day, _tally in days],
            "requests": [tally.requests for _day, tally in days],
            "tokens": [tally.total_tokens for _day, tally in days],
        },
        "active_keys": [key for key in keys if is_active(key, now)],
        "budgets": budget_lines(user_id=user.pk, now=now),
    }
    return render(request, "accounts/overview.html", context)
