"""The operator's admin for keys; the ledger's admin lives in accounts/ledger_admin.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.key_options import budget_of, normalize_networks, split_names
from accounts.keys import KeyLimits, forget_key, issue_key, revoke_key, rotate_key
from accounts.ledger_admin import UsageDailyAdmin, UsageLogAdmin
from accounts.models import ApiKey, UsageDaily, UsageLog, UserLimits

ROTATION_GRACE_MINUTES = 60

if TYPE_CHECKING:
    _LimitsAdminBase = admin.ModelAdmin[UserLimits]
    _KeyAdminBase = admin.ModelAdmin[ApiKey]
    _KeyFormBase = forms.ModelForm[ApiKey]
else:
    # Django's classes are generic only in django-stubs: subscript them for mypy alone.
    _LimitsAdminBase = admin.ModelAdmin
    _KeyAdminBase = admin.ModelAdmin
    _KeyFormBase = forms.ModelForm

_POSITIVE_LIMITS = ("rpm", "tpm", "max_concurrency", "token_budget")

# A new key's secret between saving it and rendering the add response, for that one
# request only: never in the session, a message or a cookie.
_new_secrets: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


class ApiKeyForm(_KeyFormBase):
    allowed_models = forms.CharField(
        required=False, help_text="Comma-separated model names; blank allows every model."
    )
    allowed_ips = forms.CharField(
        required=False, help_text="Comma-separated addresses or CIDR networks; blank allows any."
    )

    class Meta:
        model = ApiKey
        fields = (
            "user",
            "name",
            "expires_at",
            "allowed_models",
            "allowed_ips",
            "rpm",
            "tpm",
            "max_concurrency",
            "token_budget",
            "budget_period",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["allowed_models"] = ", ".join(self.instance.allowed_models)
            self.initial["allowed_ips"] = ", ".join(self.instance.allowed_ips)
        for name in _POSITIVE_LIMITS:
            self.fields[name].validators.append(MinValueValidator(1))

    def clean_allowed_models(self) -> list[str]:
        return list(split_names(self.cleaned_data["allowed_models"]))

    def clean_allowed_ips(self) -> list[str]:
        try:
            return list(normalize_networks(split_names(self.cleaned_data["allowed_ips"])))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            budget_of(tokens=cleaned.get("token_budget"), period=cleaned.get("budget_period"))
        except ValueError as exc:
            self.add_error("token_budget", str(exc))
        expires_at = cleaned.get("expires_at")
        if self.instance.pk is None and expires_at is not None and expires_at <= timezone.now():
            self.add_error("expires_at", "A new key cannot expire in the past.")
        return cleaned

    def limits(self) -> KeyLimits:
        data = self.cleaned_data
        return KeyLimits(
            allowed_models=tuple(data["allowed_models"]),
            allowed_ips=tuple(data["allowed_ips"]),
            rpm=data["rpm"],
            tpm=data["tpm"],
            max_concurrency=data["max_concurrency"],
            token_budget=data["token_budget"],
            budget_period=data["budget_period"],
            expires_at=data["expires_at"],
        )


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        match self.value():
            case "active":
                return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
            case "expired":
                return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
        return queryset


_KEY_FIELDSET = ("user", "name", "prefix", "created", "expires_at", "revoked_at", "last_used_at")
_LIMITS_FIELDSET = (
    "allowed_models",
    "allowed_ips",
    "rpm",
    "tpm",
    "max_concurrency",
    "token_budget",
    "budget_period",
)


@admin.register(ApiKey)
class ApiKeyAdmin(_KeyAdminBase):
    form = ApiKeyForm
    list_display = ("prefix", "name", "user", "created", "expires_at", "revoked_at", "last_used_at")
    list_filter = (KeyStateFilter, "budget_period", "created")
    search_fields = ("^prefix", "name", "user__username")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    ordering = ("-created",)
    actions = ("revoke_selected", "rotate_selected")

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        first = _KEY_FIELDSET if obj is not None else ("user", "name", "expires_at")
        return ((None, {"fields": first}), ("Limits", {"fields": _LIMITS_FIELDSET}))

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ()
        return ("user", "prefix", "created", "revoked_at", "last_used_at")

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Revoke instead: a key's usage rows keep it, and the delete page would walk them.
        return False

    def save_form(self, request: HttpRequest, form: ApiKeyForm, change: bool) -> ApiKey:
        if change:
            edited: ApiKey = super().save_form(request, form, change)
            return edited
        super().save_form(request, form, change)  # prepares form.save_m2m for save_related
        key, secret = issue_key(
            user=form.cleaned_data["user"], name=form.cleaned_data["name"], limits=form.limits()
        )
        _new_secrets[request] = secret
        return key

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ApiKeyForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            forget_key(obj.digest)  # new limits apply in this process at once

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = _new_secrets.pop(request, None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key": obj,
            "secret": secret,
        }
        return _secret_page(request, context)

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        prefixes = list(queryset.filter(revoked_at__isnull=True).values_list("prefix", flat=True))
        for prefix in prefixes:
            revoke_key(prefix=prefix)
        self.message_user(request, f"Revoked {len(prefixes)} key(s).", messages.SUCCESS)

    @admin.action(description="Rotate the selected key (old secret valid 60 more minutes)")
    def rotate_selected(
        self, request: HttpRequest, queryset: QuerySet[ApiKey]
    ) -> HttpResponse | None:
        keys = list(queryset.filter(revoked_at__isnull=True)[:2])
        if len(keys) != 1:
            self.message_user(request, "Select exactly one active key.", messages.WARNING)
            return None
        key, secret = rotate_key(prefix=keys[0].prefix, grace_minutes=ROTATION_GRACE_MINUTES)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key rotated",
            "opts": self.opts,
            "key": key,
            "secret": secret,
            "rotated": True,
            "grace_minutes": ROTATION_GRACE_MINUTES,
        }
        return _secret_page(request, context)


def _secret_page(request: HttpRequest, context: dict[str, Any]) -> TemplateResponse:
    response = TemplateResponse(request, "admin/accounts/apikey/key_created.html", context)
    response["Cache-Control"] = "no-store"
    return response


@admin.register(UserLimits)
class UserLimitsAdmin(_LimitsAdminBase):
    list_display = ("user", "token_budget", "budget_period", "max_keys")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)


admin.site.register(UsageLog, UsageLogAdmin)
admin.site.register(UsageDaily, UsageDailyAdmin)
