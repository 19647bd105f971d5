"""Adding upstreams and switching them on and off: what the admin and the commands call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction

from gateway.models import Provider, Upstream, UpstreamState
from gateway.providers.registry import provider_choices, registered

_LABEL_MAX = Upstream._meta.get_field("label").max_length or 100


def validate_upstream(
    *,
    label: str,
    provider: str,
    base_url: str,
    weight: int,
    max_concurrency: int,
    exclude_pk: int | None = None,
) -> None:
    """Raise ValidationError, keyed by field, for settings no upstream may have."""
    errors: dict[str, str] = {}
    if not label:
        errors["label"] = "A label is required."
    elif len(label) > _LABEL_MAX:
        errors["label"] = f"A label has at most {_LABEL_MAX} characters."
    elif _label_taken(label, exclude_pk):
        errors["label"] = f"An upstream labelled {label!r} already exists."
    plugin = registered(provider)
    if plugin is None:
        names = ", ".join(name for name, _label in provider_choices())
        errors["provider"] = f"The provider must be one of {names}."
    elif plugin.needs_base_url and not base_url:
        errors["base_url"] = f"An {plugin.label} upstream needs a base URL."
    if base_url and (problem := _url_problem(base_url)):
        errors["base_url"] = problem
    if weight < 1:
        errors["weight"] = "The weight must be at least 1."
    if max_concurrency < 1:
        errors["max_concurrency"] = "The concurrency cap must be at least 1."
    if errors:
        raise ValidationError(errors)


def _label_taken(label: str, exclude_pk: int | None) -> bool:
    others = Upstream.objects.filter(label=label)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    return others.exists()


def _url_problem(url: str) -> str:
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        return f"{url!r} is not an http(s) URL."
    return ""


def add_upstream(
    *,
    label: str,
    token: str,
    provider: str = Provider.PUTER,
    account: str = "",
    base_url: str = "",
    weight: int = 1,
    max_concurrency: int = 3,
    priority: int = 0,
    models: Iterable[str] = (),
) -> Upstream:
    """Add an upstream whose token is stored encrypted; raise ValidationError when invalid."""
    label, token, base_url = label.strip(), token.strip(), base_url.strip().rstrip("/")
    if not token:
        raise ValidationError({"token": "A token is required."})
    validate_upstream(
        label=label,
        provider=provider,
        base_url=base_url,
        weight=weight,
        max_concurrency=max_concurrency,
    )
    upstream = Upstream(
        label=label,
        provider=provider,
        account=account.strip(),
        base_url=base_url,
        weight=weight,
        max_concurrency=max_concurrency,
        priority=priority,
        models=[name.strip() for name in models if name.strip()],
    )
    upstream.token = token
    try:
        with transaction.atomic():
            upstream.save()
    except IntegrityError:
        # Another writer took the label between the check and the insert.
        raise ValidationError(
            {"label": f"An upstream labelled {label!r} already exists."}
        ) from None
    return upstream


def puter_label(token: str) -> str:
    """A stable label that names a token without revealing it."""
    return "puter-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def import_puter_tokens(tokens: list[str]) -> list[Upstream]:
    """Add each Puter token not yet in the pool; return only the ones added."""
    wanted = {puter_label(token): token for token in (t.strip() for t in tokens) if token}
    present = set(Upstream.objects.filter(label__in=wanted).values_list("label", flat=True))
    added: list[Upstream] = []
    for label, token in wanted.items():
        if label in present:
            continue
        try:
            added.append(add_upstream(label=label, token=token))
        except ValidationError:
            continue  # a concurrent start imported it first
    return added


def set_enabled(*, upstream: Upstream, enabled: bool) -> Upstream:
    """Switch an upstream on or off; switching on gives it a clean, healthy start."""
    upstream.enabled = enabled
    fields = ["enabled"]
    if enabled:
        upstream.state = UpstreamState.HEALTHY
        upstream.consecutive_failures = 0
        upstream.cooldown_until = None
        fields += ["state", "consecutive_failures", "cooldown_until"]
    upstream.save(update_fields=fields)
    return upstream
