"""Upstream accounts the gateway calls (DESIGN.md sections 6 and 10)."""

from __future__ import annotations

from django.db import models

from gateway.token_cipher import decrypt_token, encrypt_token


class Provider(models.TextChoices):
    PUTER = "puter", "Puter"
    OPENAI = "openai", "OpenAI-compatible"


def provider_choices() -> list[tuple[str, str]]:
    """The providers of `gateway/providers/registry.py`: a new one needs no migration."""
    from gateway.providers.registry import provider_choices as registered

    return registered()


class UpstreamState(models.TextChoices):
    HEALTHY = "healthy"
    COOLING = "cooling"
    DISABLED = "disabled"


class Upstream(models.Model):
    label = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=10, choices=provider_choices, default=Provider.PUTER)
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
    last_error_at = models.DateTimeField(null=True, blank=True)
    # The kind of the last failure (auth, quota, rate_limited, server, timeout): why it cools.
    last_failure = models.CharField(max_length=20, blank=True)
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
    """Admitted requests in a sixtieth of a rolling window (without Redis), e.g. rpm's second."""

    scope = models.CharField(max_length=120)
    at = models.FloatField()  # Unix time the slice starts
    hits = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            # One row per scope and slice; windows read WHERE scope = ? (and at > ?).
            models.UniqueConstraint(fields=["scope", "at"], name="hit_scope_second"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.at} x{self.hits}"


class VideoStatus(models.TextChoices):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class VideoJob(models.Model):
    """One `POST /v1/videos`: worked in the background by the process that accepted it."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="videos")
    request_id = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    prompt = models.TextField()
    seconds = models.CharField(max_length=8)
    size = models.CharField(max_length=20)
    status = models.CharField(
        max_length=12, choices=VideoStatus.choices, default=VideoStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=50, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # Relative to VAR_DIR; set when the video is stored.
    file = models.CharField(max_length=300, blank=True)
    upstream = models.ForeignKey(
        Upstream, on_delete=models.SET_NULL, null=True, blank=True, related_name="videos"
    )
    # The process working the job, and when it last said it still was (see video_runner).
    worker = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField()
    created = models.DateTimeField()
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # A key's jobs, newest first: WHERE key_id = ? ORDER BY created DESC
            models.Index(fields=["key", "created"], name="videojob_key_created"),
            # Orphans: WHERE status IN (queued, in_progress) AND heartbeat_at < ?
            models.Index(fields=["status", "heartbeat_at"], name="videojob_status_heartbeat"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__lte=100), name="videojob_progress_max_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"
