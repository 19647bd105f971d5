"""API keys: issued once, stored as an HMAC digest, found by digest, revoked by prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, BudgetPeriod, UserLimits

KEY_PREFIX_LENGTH = 11
_KEY_BODY_BYTES = 36  # 48 URL-safe characters
_CACHE_LIMIT = 10_000


class KeyNotFound(LookupError):
    """No key has the given prefix."""


class KeyQuotaExceeded(Exception):
    """The user already holds as many active keys as the operator allows."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    allowed_models: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    token_budget: int | None = None
    budget_period: str = BudgetPeriod.NONE
    expires_at: datetime | None = None
    # The owner's limits across all their keys.
    user_token_budget: int | None = None
    user_budget_period: str = BudgetPeriod.NONE


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What admission needs to know about a key, safe to keep in memory briefly."""

    id: int
    user_id: int
    prefix: str
    name: str
    created: datetime
    expires_at: datetime | None
    revoked: bool
    limits: KeyLimits
    # Set when the secret presented is the one a rotation replaced.
    secret_valid_until: datetime | None = None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def secret_retired(self, now: datetime) -> bool:
        return self.secret_valid_until is not None and now >= self.secret_valid_until


def with_defaults(limits: KeyLimits) -> KeyLimits:
    """Fill the limits nobody named with the operator's defaults (KEY_DEFAULT_*)."""
    budget = limits.token_budget
    period = limits.budget_period
    if budget is None and settings.KEY_DEFAULT_TOKEN_BUDGET is not None:
        budget, period = settings.KEY_DEFAULT_TOKEN_BUDGET, settings.KEY_DEFAULT_BUDGET_PERIOD
    return replace(
        limits,
        rpm=limits.rpm if limits.rpm is not None else settings.KEY_DEFAULT_RPM,
        tpm=limits.tpm if limits.tpm is not None else settings.KEY_DEFAULT_TPM,
        max_concurrency=(
            limits.max_concurrency
            if limits.max_concurrency is not None
            else settings.KEY_DEFAULT_CONCURRENCY
        ),
        token_budget=budget,
        budget_period=period,
    )


def new_secret() -> str:
    return "sk-" + secrets.token_urlsafe(_KEY_BODY_BYTES)


def digest_key(raw_key: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def issue_key(*, user: User, name: str, limits: KeyLimits) -> tuple[ApiKey, str]:
    """Create a key for `user`; the secret is returned here and never again."""
    cap = UserLimits.objects.filter(user=user).values_list("max_keys", flat=True).first()
    active = ApiKey.objects.filter(user=user, revoked_at__isnull=True).count()
    if cap is not None and active >= cap:
        raise KeyQuotaExceeded(f"{user.username} already holds {active} of {cap} keys allowed.")
    for _attempt in range(5):
        raw = new_secret()
        key = ApiKey(
            user=user,
            name=name,
            prefix=raw[:KEY_PREFIX_LENGTH],
            digest=digest_key(raw),
            expires_at=limits.expires_at,
            allowed_models=list(limits.allowed_models),
            allowed_ips=list(limits.allowed_ips),
            rpm=limits.rpm,
            tpm=limits.tpm,
            max_concurrency=limits.max_concurrency,
            token_budget=limits.token_budget,
            budget_period=limits.budget_period,
        )
        try:
            with transaction.atomic():
                key.save()
        except IntegrityError:
            continue  # a prefix collision: draw again
        return key, raw
    raise RuntimeError("could not draw a unique key prefix")


def rotate_key(*, prefix: str, grace_minutes: int = 0) -> tuple[ApiKey, str]:
    """A new secret for the same key record; the old one works for `grace_minutes` more."""
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise KeyNotFound(prefix)
    # Keep the prefix: it names the key everywhere, and its usage stays on this record.
    raw = prefix + secrets.token_urlsafe(30)
    old = key.digest
    key.previous_digest = old
    key.previous_valid_until = timezone.now() + timedelta(minutes=grace_minutes)
    key.digest = digest_key(raw)
    key.save(update_fields=["digest", "previous_digest", "previous_valid_until"])
    forget_key(old)
    return key, raw


def revoke_key(*, prefix: str) -> ApiKey:
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise KeyNotFound(prefix)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    forget_key(key.digest)
    return key


# --- lookup with a short in-process cache ----------------------------------------------

_cache: dict[str, tuple[float, KeyFacts | None]] = {}


def cached_key_facts(digest: str) -> tuple[bool, KeyFacts | None]:
    """(hit, facts) from memory; a hit may be a remembered "no such key"."""
    entry = _cache.get(digest)
    if entry is None or entry[0] < time.monotonic():
        return False, None
    return True, entry[1]


def load_key_facts(digest: str) -> KeyFacts | None:
    """Read a key from the database and remember it for SETTINGS_CACHE_SECONDS."""
    key = (
        ApiKey.objects.select_related("user__limits")
        .filter(Q(digest=digest) | Q(previous_digest=digest))
        .first()
    )
    facts = None if key is None else facts_of(key, presented=digest)
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[digest] = (time.monotonic() + settings.SETTINGS_CACHE_SECONDS, facts)
    return facts


def forget_key(digest: str) -> None:
    _cache.pop(digest, None)


def facts_of(key: ApiKey, *, presented: str = "") -> KeyFacts:
    user_limits = getattr(key.user, "limits", None)
    retired = bool(presented) and presented != key.digest
    return KeyFacts(
        id=key.pk,
        user_id=key.user_id,
        prefix=key.prefix,
        name=key.name,
        created=key.created,
        expires_at=key.expires_at,
        revoked=key.revoked_at is not None,
        limits=KeyLimits(
            allowed_models=tuple(key.allowed_models),
            allowed_ips=tuple(key.allowed_ips),
            rpm=key.rpm,
            tpm=key.tpm,
            max_concurrency=key.max_concurrency,
            token_budget=key.token_budget,
            budget_period=key.budget_period,
            expires_at=key.expires_at,
            user_token_budget=user_limits.token_budget if user_limits else None,
            user_budget_period=user_limits.budget_period if user_limits else BudgetPeriod.NONE,
        ),
        secret_valid_until=(key.previous_valid_until or key.created) if retired else None,
    )
