"""Read-only admin for the usage ledger and its daily roll-up, registered by accounts/admin.py.

The ledger grows without bound, so its list never counts rows: pages are reached by
"newer" and "older" links, and filters list no choices drawn from the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.models import UsageDaily, UsageLog

if TYPE_CHECKING:
    _LogAdminBase = admin.ModelAdmin[UsageLog]
    _DailyAdminBase = admin.ModelAdmin[UsageDaily]
    _LedgerPaginatorBase = Paginator[UsageLog]
else:
    # Django's classes are generic only in django-stubs: subscript them for mypy alone.
    _LogAdminBase = _DailyAdminBase = admin.ModelAdmin
    _LedgerPaginatorBase = Paginator

# Stands in for the row count, which the ledger's list never asks the database for.
UNCOUNTED = 10**12


class LedgerPaginator(_LedgerPaginatorBase):
    """A paginator that never counts: any page number is valid, past the end it is empty."""

    @cached_property
    def count(self) -> int:
        return UNCOUNTED

    def validate_number(self, number: int | float | str) -> int:
        try:
            return max(1, int(number))
        except (TypeError, ValueError):
            return 1


class LedgerChangeList(ChangeList):
    """Adds the "newer" and "older" links the ledger's pagination template shows."""

    newer_url: str
    older_url: str

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluate the page here; the result rows reuse the cached rows afterwards.
        full_page = len(self.result_list) == self.list_per_page
        self.newer_url = (
            self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""
        )
        self.older_url = self.get_query_string({PAGE_VAR: self.page_num + 1}) if full_page else ""


class _TypedValueFilter(admin.SimpleListFilter):
    """Filters by a value given in the URL; lists only that value, so it never queries."""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value or self.parameter_name is None:
            return queryset
        return queryset.filter(**{self.parameter_name: value})


class KeyPrefixFilter(_TypedValueFilter):
    title = "key"
    parameter_name = "key__prefix"


class UsernameFilter(_TypedValueFilter):
    title = "user"
    parameter_name = "user__username"


class ModelNameFilter(_TypedValueFilter):
    title = "model"
    parameter_name = "model"


class UsageLogAdmin(_LogAdminBase):
    list_display = (
        "created",
        "request_id",
        "key_link",
        "user_link",
        "endpoint",
        "model_link",
        "status",
        "http_status",
        "tokens",
        "latency_ms",
        "ttft_ms",
        "upstream",
    )
    list_filter = (
        "status",
        "endpoint",
        "stream",
        "created",
        KeyPrefixFilter,
        UsernameFilter,
        ModelNameFilter,
    )
    list_select_related = ("key", "user", "upstream")
    search_fields = ("request_id",)
    search_help_text = "A request id, exactly as the response's x-request-id header gave it."
    ordering = ("-created",)
    # Any other order would sort the whole table.
    sortable_by = ("created",)
    list_per_page = 100
    paginator = LedgerPaginator
    show_full_result_count = False
    # Facets count every filter choice over the table.
    show_facets = admin.ShowFacets.NEVER

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LedgerChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[UsageLog], search_term: str
    ) -> tuple[QuerySet[UsageLog], bool]:
        # An exact match uses the request_id index; the default icontains would scan.
        term = search_term.strip()
        return (queryset.filter(request_id=term) if term else queryset), False

    @admin.display(description="key")
    def key_link(self, obj: UsageLog) -> SafeString:
        prefix = obj.key.prefix
        return format_html('<a href="?{}">{}…</a>', urlencode({"key__prefix": prefix}), prefix)

    @admin.display(description="user")
    def user_link(self, obj: UsageLog) -> SafeString:
        name = obj.user.get_username()
        return format_html('<a href="?{}">{}</a>', urlencode({"user__username": name}), name)

    @admin.display(description="model")
    def model_link(self, obj: UsageLog) -> SafeString:
        return format_html('<a href="?{}">{}</a>', urlencode({"model": obj.model}), obj.model)

    @admin.display(description="tokens")
    def tokens(self, obj: UsageLog) -> int:
        return obj.total_tokens

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageLog | None = None) -> bool:
        # The ledger is never edited; prune_usage removes old rows.
        return False


class UsageDailyAdmin(_DailyAdminBase):
    list_display = (
        "day",
        "user",
        "key",
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "errors",
        "rejected",
    )
    list_filter = ("day", KeyPrefixFilter, UsernameFilter, ModelNameFilter)
    list_select_related = ("key", "user")
    search_fields = ("model",)
    ordering = ("-day", "model")
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageDaily | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageDaily | None = None) -> bool:
        return False
