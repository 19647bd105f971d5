"""Keys people manage for themselves in the portal, within what the operator allows.

The policy is small on purpose. Each per-key limit has an operator cap (PORTAL_KEY_*), and a
blank field takes the operator's default for new keys (KEY_DEFAULT_*, else the cap), so a key
made in the portal is never looser than the operator wants. How many keys a user may hold is
the operator's per-user cap (UserLimits.max_keys), which `issue_key` enforces everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q
from django.utils import timezone

from accounts.key_options import budget_of
from accounts.keys import KeyLimits, issue_key, revoke_key, rotate_key, with_defaults
from accounts.models import ApiKey, BudgetPeriod

# The key the playground charges its calls to; made on first use, never shown.
PLAYGROUND_KEY_NAME = "playground"


class PolicyRefused(ValueError):
    """A requested limit is looser than the operator allows; `field` names the form field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class KeyNotActive(Exception):
    """The key is revoked or expired: there is nothing to rotate."""


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What a portal key may ask for (`caps`, None: no cap) and gets when it asks nothing."""

    caps: KeyLimits
    defaults: KeyLimits
    rotation_grace_minutes: int


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What a person asked for in the key form; None means "the default"."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    token_budget: int | None = None
    budget_period: str | None = None
    allowed_models: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()
    expires_at: datetime | None = None


def _lower(value: int | None, cap: int | None) -> int | None:
    """The smaller of two limits, where None is no limit at all."""
    if value is None or cap is None:
        return cap if value is None else value
    return min(value, cap)


def key_policy() -> KeyPolicy:
    caps = KeyLimits(
        rpm=settings.PORTAL_KEY_RPM or None,
        tpm=settings.PORTAL_KEY_TPM or None,
        max_concurrency=settings.PORTAL_KEY_CONCURRENCY or None,
        token_budget=settings.PORTAL_KEY_BUDGET_TOKENS or None,
        budget_period=settings.PORTAL_KEY_BUDGET_PERIOD,
    )
    defaults = with_defaults(KeyLimits())
    if caps.token_budget is not None and defaults.budget_period != caps.budget_period:
        # A default budget of another period cannot be compared with the cap: use the cap.
        defaults = replace(defaults, token_budget=None)
    defaults = replace(
        defaults,
        rpm=_lower(defaults.rpm, caps.rpm),
        tpm=_lower(defaults.tpm, caps.tpm),
        max_concurrency=_lower(defaults.max_concurrency, caps.max_concurrency),
        token_budget=_lower(defaults.token_budget, caps.token_budget),
    )
    if caps.token_budget is not None:
        defaults = replace(defaults, budget_period=caps.budget_period)
    return KeyPolicy(caps, defaults, settings.PORTAL_ROTATION_GRACE_MINUTES)


def over_cap(cap: int) -> str:
    return f"At most {cap}: the operator's limit for keys made here."


def _pick(field: str, asked: int | None, default: int | None, cap: int | None) -> int | None:
    if asked is None:
        return default
    if cap is not None and asked > cap:
        raise PolicyRefused(field, over_cap(cap))
    return asked


def _budget(policy: KeyPolicy, request: KeyRequest) -> tuple[int | None, str]:
    caps, defaults = policy.caps, policy.defaults
    if caps.token_budget is not None:
        # The period is fixed with the cap: a daily budget of N would allow 30 N a month.
        asked = _pick(
            "token_budget", request.token_budget, defaults.token_budget, caps.token_budget
        )
        return asked, caps.budget_period
    if request.token_budget is None and not request.budget_period:
        return defaults.token_budget, defaults.budget_period
    try:
        return budget_of(tokens=request.token_budget, period=request.budget_period)
    except ValueError as exc:
        raise PolicyRefused("budget_period", str(exc)) from None


def limits_within(*, policy: KeyPolicy, request: KeyRequest) -> KeyLimits:
    """The limits of a new portal key: what was asked, defaulted and capped by the policy."""
    caps, defaults = policy.caps, policy.defaults
    budget, period = _budget(policy, request)
    return KeyLimits(
        allowed_models=request.allowed_models,
        allowed_ips=request.allowed_ips,
        rpm=_pick("rpm", request.rpm, defaults.rpm, caps.rpm),
        tpm=_pick("tpm", request.tpm, defaults.tpm, caps.tpm),
        max_concurrency=_pick(
            "max_concurrency",
            request.max_concurrency,
            defaults.max_concurrency,
            caps.max_concurrency,
        ),
        token_budget=budget,
        budget_period=period if budget is not None else BudgetPeriod.NONE,
        expires_at=request.expires_at,
    )


def own_keys(*, user: User) -> list[ApiKey]:
    return list(ApiKey.objects.filter(user=user).order_by("-created"))


def own_key(*, user: User, prefix: str) -> ApiKey:
    """The user's key with this prefix; ApiKey.DoesNotExist for anyone else's."""
    return ApiKey.objects.get(user=user, prefix=prefix)


def create_own_key(*, user: User, request: KeyRequest, policy: KeyPolicy) -> tuple[ApiKey, str]:
    """A new key for `user` (KeyQuotaExceeded past the user's cap); the secret, once."""
    limits = limits_within(policy=policy, request=request)
    return issue_key(user=user, name=request.name, limits=limits)


def revoke_own_key(*, user: User, prefix: str) -> ApiKey:
    return revoke_key(prefix=own_key(user=user, prefix=prefix).prefix)


def rotate_own_key(*, user: User, prefix: str, policy: KeyPolicy) -> tuple[ApiKey, str]:
    """A new secret for the user's key; the old one works for the policy's grace period."""
    key = own_key(user=user, prefix=prefix)
    if not is_active(key, timezone.now()):
        raise KeyNotActive(prefix)
    return rotate_key(prefix=key.prefix, grace_minutes=policy.rotation_grace_minutes)


def is_active(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def playground_key(*, user: User) -> ApiKey:
    """The user's active key named `playground`, made with the policy's defaults if missing."""
    now = timezone.now()
    found = (
        ApiKey.objects.filter(user=user, name=PLAYGROUND_KEY_NAME, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-created")
        .first()
    )
    if found is not None:
        return found
    limits = limits_within(policy=key_policy(), request=KeyRequest(name=PLAYGROUND_KEY_NAME))
    key, _secret = issue_key(user=user, name=PLAYGROUND_KEY_NAME, limits=limits)
    return key
