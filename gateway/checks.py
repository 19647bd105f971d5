"""System checks: bad configuration stops the gateway at start-up with a clear id."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import CheckMessage, Error, register


@register()
def check_token_keys(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for position, key in enumerate(settings.TOKEN_ENCRYPTION_KEYS, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            errors.append(
                Error(
                    f"TOKEN_ENCRYPTION_KEY entry {position} is not a Fernet key.",
                    hint="Generate one with: python -c 'from cryptography.fernet import "
                    "Fernet; print(Fernet.generate_key().decode())'",
                    id="gateway.E001",
                )
            )
    return errors


@register()
def check_puter_extra_headers(**kwargs: Any) -> list[CheckMessage]:
    raw = settings.PUTER_EXTRA_HEADERS
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        return []
    return [
        Error(
            "PUTER_EXTRA_HEADERS must be a JSON object of string values.",
            hint='For example: {"Origin": "https://puter.com"}',
            id="gateway.E002",
        )
    ]


@register()
def check_puter_api_base(**kwargs: Any) -> list[CheckMessage]:
    base = settings.PUTER_API_BASE
    if base.startswith(("http://", "https://")):
        return []
    return [
        Error(
            f"PUTER_API_BASE must be an http(s) URL, not {base!r}.",
            id="gateway.E003",
        )
    ]


@register()
def check_secret_key(**kwargs: Any) -> list[CheckMessage]:
    if len(settings.SECRET_KEY) >= 32:
        return []
    return [
        Error(
            "DJANGO_SECRET_KEY is shorter than 32 characters; it keys every API key digest.",
            id="gateway.E004",
        )
    ]


@register()
def check_key_defaults(**kwargs: Any) -> list[CheckMessage]:
    if settings.KEY_DEFAULT_BUDGET_PERIOD in {"none", "day", "month"}:
        return []
    return [
        Error(
            "KEY_DEFAULT_BUDGET_PERIOD must be none, day or month.",
            id="gateway.E005",
        )
    ]
