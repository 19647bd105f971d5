"""The operator's admin for upstreams: the token is write-only, state is read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from gateway.models import ModelAlias, Upstream
from gateway.prober import check_now
from gateway.upstreams import add_upstream, set_enabled, validate_upstream

if TYPE_CHECKING:
    _AliasAdminBase = admin.ModelAdmin[ModelAlias]
    _UpstreamAdminBase = admin.ModelAdmin[Upstream]
    _UpstreamFormBase = forms.ModelForm[Upstream]
else:
    # Django's classes are generic only in django-stubs: subscript them for mypy alone.
    _AliasAdminBase = admin.ModelAdmin
    _UpstreamAdminBase = admin.ModelAdmin
    _UpstreamFormBase = forms.ModelForm


class UpstreamForm(_UpstreamFormBase):
    token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown. When editing, blank keeps the current one.",
    )
    base_url = forms.URLField(
        required=False, assume_scheme="https", help_text="Blank means the provider's default."
    )
    models = forms.CharField(
        required=False, help_text="Comma-separated model names; blank serves every model."
    )

    class Meta:
        model = Upstream
        fields = (
            "label",
            "provider",
            "base_url",
            "account",
            "weight",
            "max_concurrency",
            "priority",
            "models",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["token"].required = self.instance.pk is None
        if self.instance.pk is not None:
            self.initial["models"] = ", ".join(self.instance.models)

    def clean_models(self) -> list[str]:
        raw: str = self.cleaned_data["models"]
        return [name.strip() for name in raw.split(",") if name.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        needed = ("label", "provider", "weight", "max_concurrency")
        if any(cleaned.get(name) is None for name in needed):
            return cleaned  # a field error already explains what is missing
        try:
            validate_upstream(
                label=cleaned["label"].strip(),
                provider=cleaned["provider"],
                base_url=cleaned.get("base_url") or "",
                weight=cleaned["weight"],
                max_concurrency=cleaned["max_concurrency"],
                exclude_pk=self.instance.pk,
            )
        except ValidationError as exc:
            self.add_error(None, exc)
        return cleaned

    def validate_unique(self) -> None:
        """Leave the label to validate_upstream, which words it once."""


@admin.register(Upstream)
class UpstreamAdmin(_UpstreamAdminBase):
    form = UpstreamForm
    list_display = (
        "label",
        "provider",
        "account",
        "weight",
        "max_concurrency",
        "priority",
        "enabled",
        "state",
        "cooldown_until",
        "consecutive_failures",
        "last_failure",
        "last_error",
        "last_error_at",
        "last_ok_at",
    )
    list_filter = ("provider", "enabled", "state", "priority")
    search_fields = ("label", "account")
    ordering = ("-priority", "label")
    actions = ("enable_selected", "disable_selected", "test_now")
    _state_fields = (
        "enabled",
        "state",
        "cooldown_until",
        "consecutive_failures",
        "last_failure",
        "last_error",
        "last_error_at",
        "last_ok_at",
        "created",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Upstream | None = None) -> Any:
        settings_fields = ("label", "provider", "base_url", "token", "account")
        tiers = ("weight", "max_concurrency", "priority", "models")
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": settings_fields}),
            ("Scheduling", {"fields": tiers}),
        ]
        if obj is not None:
            fieldsets.append(("State", {"fields": self._state_fields}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Upstream | None = None) -> Any:
        return self._state_fields if obj is not None else ()

    def save_form(self, request: HttpRequest, form: UpstreamForm, change: bool) -> Upstream:
        if change:
            edited: Upstream = super().save_form(request, form, change)
            return edited
        super().save_form(request, form, change)  # prepares form.save_m2m for save_related
        data = form.cleaned_data
        return add_upstream(
            label=data["label"],
            token=data["token"],
            provider=data["provider"],
            account=data["account"],
            base_url=data["base_url"],
            weight=data["weight"],
            max_concurrency=data["max_concurrency"],
            priority=data["priority"],
            models=data["models"],
        )

    def save_model(
        self, request: HttpRequest, obj: Upstream, form: UpstreamForm, change: bool
    ) -> None:
        if not change:
            return  # add_upstream saved it in save_form
        if form.cleaned_data["token"]:
            obj.token = form.cleaned_data["token"]
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected upstreams")
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        self._switch(request, queryset, enabled=True)

    @admin.action(description="Disable selected upstreams")
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        self._switch(request, queryset, enabled=False)

    @admin.action(description="Test now: probe the selected upstreams")
    def test_now(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        reports = check_now(set(queryset.filter(enabled=True).values_list("pk", flat=True)))
        for report in reports:
            level = messages.SUCCESS if report.result.startswith("ok") else messages.WARNING
            took = f" in {report.ms} ms" if report.ms is not None else ""
            self.message_user(
                request, f"{report.label}: {report.state}, {report.result}{took}.", level
            )
        if not reports:
            self.message_user(request, "Only enabled upstreams are probed.", messages.WARNING)

    def _switch(self, request: HttpRequest, queryset: QuerySet[Upstream], *, enabled: bool) -> None:
        upstreams = list(queryset)
        for upstream in upstreams:
            set_enabled(upstream=upstream, enabled=enabled)
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {len(upstreams)} upstream(s).", messages.SUCCESS)


@admin.register(ModelAlias)
class ModelAliasAdmin(_AliasAdminBase):
    list_display = ("alias", "target", "fallbacks", "created")
    search_fields = ("alias", "target")
