"""People's keys and what they used: the operator's data model (DESIGN.md section 6)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class BudgetPeriod(models.TextChoices):
    NONE = "none", "no period"
    DAY = "day", "per day"
    MONTH = "month", "per month"


class ApiKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    # `sk-` and 8 more characters: shown wherever a key is named, never the secret.
    prefix = models.CharField(max_length=11, unique=True)
    # HMAC-SHA256 of the whole key under the Django secret, hex.
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.JSONField(default=list, blank=True)
    allowed_ips = models.JSONField(default=list, blank=True)
    rpm = models.PositiveIntegerField(null=True, blank=True)
    tpm = models.PositiveIntegerField(null=True, blank=True)
    max_concurrency = models.PositiveIntegerField(null=True, blank=True)
    token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    budget_period = models.CharField(
        max_length=5, choices=BudgetPeriod.choices, default=BudgetPeriod.NONE
    )
    # After a rotation the old secret keeps working until previous_valid_until.
    previous_digest = models.CharField(max_length=64, blank=True, default="")
    previous_valid_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        indexes = [
            # The portal's key list: WHERE user_id = ? ORDER BY created
            models.Index(fields=["user", "created"], name="apikey_user_created"),
            # Authentication during a rotation's grace period: WHERE previous_digest = ?
            models.Index(fields=["previous_digest"], name="apikey_previous_digest"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})" if self.name else f"{self.prefix}…"


class UserLimits(models.Model):
    """Limits across all of a user's keys, set by an operator."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limits"
    )
    token_budget = models.PositiveBigIntegerField(null=True, blank=True)
    budget_period = models.CharField(
        max_length=5, choices=BudgetPeriod.choices, default=BudgetPeriod.NONE
    )
    max_keys = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of user {self.user_id}"


class Endpoint(models.TextChoices):
    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    IMAGES = "images.generations"
    SPEECH = "audio.speech"
    VIDEOS = "videos"


class UsageStatus(models.TextChoices):
    OK = "ok"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ERROR = "upstream_error"
    REJECTED = "rejected"
    INVALID_REQUEST = "invalid_request"


class UsageLog(models.Model):
    """The ledger: one row per model call that passed authentication, never updated."""

    created = models.DateTimeField(db_index=False)
    # Unique per row: a row replayed from the local journal is never written twice.
    entry_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    request_id = models.CharField(max_length=64)
    # No index of their own: (key, created) and (user, created) lead with them. Every index
    # is written with every row.
    key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    endpoint = models.CharField(max_length=20, choices=Endpoint.choices)
    model = models.CharField(max_length=200)
    upstream_model = models.CharField(max_length=200, blank=True)
    upstream = models.ForeignKey(
        "gateway.Upstream",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
    )
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=UsageStatus.choices)
    http_status = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    usd_cents = models.FloatField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [
            # Usage charts and exports: WHERE key_id = ? AND created >= ? ORDER BY created
            models.Index(fields=["key", "created"], name="usage_key_created"),
            # Per-user views and exports: WHERE user_id = ? AND created >= ?
            models.Index(fields=["user", "created"], name="usage_user_created"),
            # Pruning and the admin's date order: WHERE created < ? / ORDER BY created
            models.Index(fields=["created"], name="usage_created"),
            # Lookup of a request's row by the id every response carries.
            models.Index(fields=["request_id"], name="usage_request_id"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    total_tokens=models.F("prompt_tokens") + models.F("completion_tokens")
                ),
                name="usage_total_is_sum",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status}"


class UsageDaily(models.Model):
    """Per key, model and UTC day: kept exact as ledger rows are written."""

    day = models.DateField()
    # Indexed as the first column of (key, model, day) and of (user, day).
    key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, related_name="daily_usage", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="daily_usage",
        db_index=False,
    )
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "usage daily"
        constraints = [
            models.UniqueConstraint(fields=["key", "model", "day"], name="daily_key_model_day"),
        ]
        indexes = [
            # User dashboards: WHERE user_id = ? AND day BETWEEN ? AND ?
            models.Index(fields=["user", "day"], name="daily_user_day"),
            # Operator overview: WHERE day BETWEEN ? AND ?
            models.Index(fields=["day"], name="daily_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.key_id} {self.model}"


class KeyTokensSecond(models.Model):
    """Tokens of a key's requests that finished in one second, for its tokens-per-minute.

    Summing at most 60 of these is what admission reads, however many requests a key
    makes; rows older than two minutes are deleted as new ones are written.
    """

    # Indexed as the first column of (key, second).
    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+", db_index=False)
    second = models.BigIntegerField()  # Unix time, whole seconds
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            # Admission: WHERE key_id = ? AND second > ?; one row per key and second.
            models.UniqueConstraint(fields=["key", "second"], name="key_tokens_second"),
        ]

    def __str__(self) -> str:
        return f"{self.key_id} {self.second} {self.tokens}"
