"""`/admin/overview/`: usage across users and keys, and the upstream pool, for operators.

Wired in project/urls.py through `admin.site.admin_view`, so only staff reach it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.dashboards import operator_usage
from accounts.forms import RangeForm
from accounts.usage_export import ExportFilter, export_stream
from gateway.pool_health import state_counts, upstream_health


class UnknownUser(LookupError):
    """`?user=` names nobody."""


def _chosen_user_id(request: HttpRequest) -> int | None:
    username = request.GET.get("user", "").strip()
    if not username:
        return None
    user = User.objects.filter(username=username).only("pk").first()
    if user is None:
        raise UnknownUser(username)
    return user.pk


def overview(request: HttpRequest) -> TemplateResponse:
    now = timezone.now()
    form = RangeForm(request.GET)
    span = form.span(today=now.astimezone(dt.UTC).date())
    pool = upstream_health(now=now)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Usage overview",
        "form": form,
        "username": request.GET.get("user", "").strip(),
        "pool": pool,
        "report": None,
        "chart": {"pool": state_counts(pool)},
    }
    try:
        report = operator_usage(span=span, user_id=_chosen_user_id(request))
    except UnknownUser:
        return TemplateResponse(request, "admin/overview.html", context, status=404)
    context.update(report=report, chart={**context["chart"], **report.chart_data()})
    return TemplateResponse(request, "admin/overview.html", context)


def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The ledger rows of the chosen range (and user), streamed as CSV."""
    form = RangeForm(request.GET)
    span = form.span(today=timezone.now().astimezone(dt.UTC).date())
    try:
        user_id = _chosen_user_id(request)
    except UnknownUser:
        raise Http404("No such user.") from None
    selection = ExportFilter(since=span.start, until=span.end, user_id=user_id)
    filename = f"ledger-{span.start.isoformat()}-{span.end.isoformat()}.csv"
    return StreamingHttpResponse(
        export_stream(selection, "csv"),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
