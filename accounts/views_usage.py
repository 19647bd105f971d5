"""`/usage/`: charts and totals from the daily rollup; `/usage/export.csv` from the ledger."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.dashboards import budget_lines, user_usage
from accounts.forms import RangeForm
from accounts.models import ApiKey
from accounts.usage_export import ExportFilter, export_stream
from accounts.views_portal import portal_user


def _chosen_key(request: HttpRequest) -> ApiKey | None:
    """The user's key named by `?key=PREFIX`; 404 for a prefix that is not theirs."""
    prefix = request.GET.get("key", "").strip()
    if not prefix:
        return None
    key = ApiKey.objects.filter(user=portal_user(request), prefix=prefix).first()
    if key is None:
        raise Http404("No such key.")
    return key


@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    user = portal_user(request)
    now = timezone.now()
    form = RangeForm(request.GET)
    span = form.span(today=now.astimezone(dt.UTC).date())
    key = _chosen_key(request)
    report = user_usage(user_id=user.pk, span=span, key_id=key.pk if key else None)
    context = {
        "form": form,
        "report": report,
        "chart": report.chart_data(),
        "key": key,
        "keys": ApiKey.objects.filter(user=user).order_by("-created"),
        "budgets": budget_lines(user_id=user.pk, now=now),
    }
    return render(request, "accounts/usage.html", context)


@login_required
@require_GET
def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The user's own ledger rows in the chosen range, streamed."""
    user = portal_user(request)
    form = RangeForm(request.GET)
    span = form.span(today=timezone.now().astimezone(dt.UTC).date())
    key = _chosen_key(request)
    selection = ExportFilter(
        since=span.start, until=span.end, user_id=user.pk, key_id=key.pk if key else None
    )
    filename = f"usage-{span.start.isoformat()}-{span.end.isoformat()}.csv"
    return StreamingHttpResponse(
        export_stream(selection, "csv"),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
