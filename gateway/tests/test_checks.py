"""System checks: bad configuration is reported at start-up with a stable id."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.checks import Error, run_checks
from django.test import override_settings

from gateway.checks import (
    check_puter_api_base,
    check_puter_extra_headers,
    check_secret_key,
    check_token_keys,
)

GOOD_KEY = Fernet.generate_key().decode()
LONG_SECRET = "s" * 32
FERNET_HINT = (
    "Generate one with: python -c 'from cryptography.fernet import "
    "Fernet; print(Fernet.generate_key().decode())'"
)


def gateway_ids() -> list[str]:
    return sorted(m.id for m in run_checks() if m.id and m.id.startswith("gateway."))


@override_settings(TOKEN_ENCRYPTION_KEYS=[GOOD_KEY, "not-a-key", "short"])
def test_each_token_key_that_is_not_a_fernet_key_is_an_e001() -> None:
    assert check_token_keys() == [
        Error(
            "TOKEN_ENCRYPTION_KEY entry 2 is not a Fernet key.",
            hint=FERNET_HINT,
            id="gateway.E001",
        ),
        Error(
            "TOKEN_ENCRYPTION_KEY entry 3 is not a Fernet key.",
            hint=FERNET_HINT,
            id="gateway.E001",
        ),
    ]


@override_settings(TOKEN_ENCRYPTION_KEYS=[GOOD_KEY, Fernet.generate_key().decode()])
def test_fernet_token_keys_pass() -> None:
    assert check_token_keys() == []


@pytest.mark.parametrize(
    "raw",
    ["not json", '["Origin"]', '{"Origin": 1}', '{"X-Retries": null}', '"text"'],
)
def test_extra_headers_that_are_not_an_object_of_strings_are_an_e002(raw: str) -> None:
    with override_settings(PUTER_EXTRA_HEADERS=raw):
        assert check_puter_extra_headers() == [
            Error(
                "PUTER_EXTRA_HEADERS must be a JSON object of string values.",
                hint='For example: {"Origin": "https://puter.com"}',
                id="gateway.E002",
            )
        ]


@pytest.mark.parametrize("raw", ["", "{}", '{"Origin": "https://puter.com", "X-A": "b"}'])
def test_empty_or_string_valued_extra_headers_pass(raw: str) -> None:
    with override_settings(PUTER_EXTRA_HEADERS=raw):
        assert check_puter_extra_headers() == []


@pytest.mark.parametrize("base", ["api.puter.com", "ftp://api.puter.com", ""])
def test_an_api_base_that_is_not_an_http_url_is_an_e003(base: str) -> None:
    with override_settings(PUTER_API_BASE=base):
        assert check_puter_api_base() == [
            Error(f"PUTER_API_BASE must be an http(s) URL, not {base!r}.", id="gateway.E003")
        ]


@pytest.mark.parametrize("base", ["https://api.puter.com", "http://127.0.0.1:8123"])
def test_an_http_api_base_passes(base: str) -> None:
    with override_settings(PUTER_API_BASE=base):
        assert check_puter_api_base() == []


@override_settings(SECRET_KEY="s" * 31)
def test_a_secret_key_shorter_than_32_characters_is_an_e004() -> None:
    assert check_secret_key() == [
        Error(
            "DJANGO_SECRET_KEY is shorter than 32 characters; it keys every API key digest.",
            id="gateway.E004",
        )
    ]


@override_settings(SECRET_KEY=LONG_SECRET)
def test_a_secret_key_of_32_characters_passes() -> None:
    assert check_secret_key() == []


@override_settings(
    TOKEN_ENCRYPTION_KEYS=["not-a-key"],
    PUTER_EXTRA_HEADERS="[]",
    PUTER_API_BASE="api.puter.com",
    SECRET_KEY="short",
)
def test_django_runs_every_check_at_start_up() -> None:
    assert gateway_ids() == ["gateway.E001", "gateway.E002", "gateway.E003", "gateway.E004"]


@override_settings(
    TOKEN_ENCRYPTION_KEYS=[GOOD_KEY],
    PUTER_EXTRA_HEADERS='{"Origin": "https://puter.com"}',
    PUTER_API_BASE="https://api.puter.com",
    SECRET_KEY=LONG_SECRET,
)
def test_a_good_configuration_reports_no_gateway_errors() -> None:
    assert gateway_ids() == []
