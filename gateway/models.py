"""Upstream accounts the gateway calls (DESIGN.md sections 6 and 10)."""

from __future__ import annotations

from django.db import models

from gateway.token_cipher import decrypt_token, encrypt_token


class Provider(models.TextChoices):
    PUTER = "puter", "Puter"
    OPENAI = "openai", "OpenAI-compatible"


class UpstreamState(models.TextChoices):
    HEALTHY = "healthy"
    COOLING = "cooling"
    DISABLED = "disabled"


class Upstream(models.Model):
    label = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=10, choices=Provider.choices, default=Provider.PUTER)
    base_url = models.URLField(blank=True, help_text="Blank means the provider's default.")
    # Fernet ciphertext; read it through `token` only.
    token_encrypted = models.TextField(editable=False)
    account = models.CharField(
        max_length=100, blank=True, help_text="Tokens of one account share its limits."
    )
    weight = models.PositiveIntegerField(default=1)
    max_concurrency = models.PositiveIntegerField(default=3)
    priority = models.IntegerField(default=0, help_text="Higher tiers are used first.")
    enabled = models.BooleanField(default=True)
    state = models.CharField(
        max_length=10, choices=UpstreamState.choices, default=UpstreamState.HEALTHY
    )
    cooldown_until = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Last field: past this line `models` names the field, not django.db.models.
    models = models.JSONField(default=list, blank=True, help_text="Empty means every model.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gte=1), name="upstream_weight_min_1"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def token(self) -> str:
        return decrypt_token(self.token_encrypted)

    @token.setter
    def token(self, value: str) -> None:
        self.token_encrypted = encrypt_token(value)

    @property
    def account_name(self) -> str:
        return self.account or self.label


class ModelAlias(models.Model):
    """A model name of the gateway's own, served by a target model (with fallbacks)."""

    alias = models.CharField(max_length=200, unique=True)
    target = models.CharField(max_length=200)
    # Tried in order when every upstream of the target fails before the first byte.
    fallbacks = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.alias} → {self.target}"


class Slot(models.Model):
    """A held unit of a concurrency limit (without Redis); expires if its holder dies."""

    scope = models.CharField(max_length=120)
    holder = models.CharField(max_length=64, unique=True)
    expires_at = models.FloatField()  # Unix time

    class Meta:
        indexes = [
            # Acquire: WHERE scope = ? AND expires_at > ?
            models.Index(fields=["scope", "expires_at"], name="slot_scope_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.holder}"


class Hit(models.Model):
    """One admitted request in a rolling window (without Redis), e.g. a key's rpm."""

    scope = models.CharField(max_length=120)
    at = models.FloatField()  # Unix time

    class Meta:
        indexes = [
            # Windows: WHERE scope = ? AND at > ?
            models.Index(fields=["scope", "at"], name="hit_scope_at"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.at}"
