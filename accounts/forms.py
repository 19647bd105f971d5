"""The portal's forms: a new key within the operator's policy, and a date range."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from accounts.dashboards import MAX_SPAN_DAYS, DateSpan
from accounts.key_options import normalize_networks, split_names
from accounts.models import BudgetPeriod
from accounts.portal_keys import PLAYGROUND_KEY_NAME, KeyPolicy, KeyRequest, over_cap


def _limit_help(unit: str, default: int | None, cap: int | None) -> str:
    blank = "no limit" if default is None else str(default)
    most = "" if cap is None else f" At most {cap}."
    return f"{unit}. Blank: {blank}.{most}"


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. “laptop”.")
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The key stops working at 00:00 UTC that day. Blank: never.",
    )
    allowed_models = forms.CharField(
        required=False, help_text="Comma-separated model names. Blank: every model."
    )
    allowed_ips = forms.CharField(
        required=False,
        label="Allowed IPs",
        help_text="Comma-separated addresses or CIDR networks. Blank: any address.",
    )
    rpm = forms.IntegerField(required=False, min_value=1, label="Requests per minute")
    tpm = forms.IntegerField(required=False, min_value=1, label="Tokens per minute")
    max_concurrency = forms.IntegerField(required=False, min_value=1, label="Concurrent requests")
    token_budget = forms.IntegerField(required=False, min_value=1, label="Token budget")
    budget_period = forms.ChoiceField(
        choices=BudgetPeriod.choices, required=False, label="Budget period"
    )

    def __init__(self, *args: Any, policy: KeyPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        caps, defaults = policy.caps, policy.defaults
        units = {
            "rpm": "In any 60 seconds",
            "tpm": "In any 60 seconds",
            "max_concurrency": "At once",
            "token_budget": "Tokens",
        }
        for name, unit in units.items():
            cap = getattr(caps, name)
            self.fields[name].help_text = _limit_help(unit, getattr(defaults, name), cap)
            if cap is not None:
                self.fields[name].widget.attrs["max"] = cap
                self.fields[name].validators.append(MaxValueValidator(cap, over_cap(cap)))
        if caps.token_budget is not None:
            # The operator's cap comes with its period; see accounts/portal_keys.py.
            del self.fields["budget_period"]
            self.fields["token_budget"].help_text += f" Per {caps.budget_period}."

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if name.lower() == PLAYGROUND_KEY_NAME:
            raise ValidationError("“playground” is the name of the playground's own key.")
        return name

    def clean_expires_on(self) -> dt.date | None:
        day: dt.date | None = self.cleaned_data["expires_on"]
        if day is not None and day <= dt.datetime.now(dt.UTC).date():
            raise ValidationError("Choose a day after today.")
        return day

    def clean_allowed_models(self) -> tuple[str, ...]:
        return split_names(self.cleaned_data["allowed_models"])

    def clean_allowed_ips(self) -> tuple[str, ...]:
        try:
            return normalize_networks(split_names(self.cleaned_data["allowed_ips"]))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def key_request(self) -> KeyRequest:
        data = self.cleaned_data
        expires_on = data["expires_on"]
        return KeyRequest(
            name=data["name"],
            rpm=data["rpm"],
            tpm=data["tpm"],
            max_concurrency=data["max_concurrency"],
            token_budget=data["token_budget"],
            budget_period=data.get("budget_period") or None,
            allowed_models=data["allowed_models"],
            allowed_ips=data["allowed_ips"],
            expires_at=(
                dt.datetime.combine(expires_on, dt.time(), tzinfo=dt.UTC) if expires_on else None
            ),
        )


class RangeForm(forms.Form):
    """A date range in the query string; blank days mean the default span."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if start > end:
                raise ValidationError("The first day comes after the last one.")
            if (end - start).days >= MAX_SPAN_DAYS:
                raise ValidationError(f"Choose at most {MAX_SPAN_DAYS} days.")
        return cleaned

    def span(self, *, today: dt.date, default_days: int = 30) -> DateSpan:
        """The span asked for, or the last `default_days` days when the form is blank or bad."""
        default = DateSpan.last(default_days, today=today)
        if not self.is_valid():
            return default
        start: dt.date | None = self.cleaned_data.get("start")
        end: dt.date | None = self.cleaned_data.get("end")
        length = dt.timedelta(days=default_days - 1)
        if start is not None and end is not None:
            return DateSpan(start, end)
        if start is not None:
            return DateSpan(start, max(start, min(start + length, today)))
        if end is not None:
            return DateSpan(end - length, end)
        return default
