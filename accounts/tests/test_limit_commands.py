"""Operator commands for limits: user limits, the key cap, rotation and key defaults."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.keys import digest_key
from accounts.models import ApiKey, UserLimits


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.mark.django_db
def test_set_user_limits_stores_the_budget_and_the_key_cap() -> None:
    User.objects.create(username="sam")
    assert run("set_user_limits", "sam", "--budget-tokens", "5000", "--budget-period", "day",
               "--max-keys", "2") == "sam"  # fmt: skip
    limits = UserLimits.objects.get(user__username="sam")
    assert (limits.token_budget, limits.budget_period, limits.max_keys) == (5000, "day", 2)


@pytest.mark.django_db
def test_issue_key_refuses_a_key_beyond_max_keys() -> None:
    run("issue_key", "kim")
    run("set_user_limits", "kim", "--max-keys", "1")
    with pytest.raises(CommandError, match="already holds 1 of 1 keys"):
        run("issue_key", "kim")
    assert ApiKey.objects.filter(user__username="kim").count() == 1


@pytest.mark.django_db
def test_rotate_key_prints_a_new_secret_for_the_same_record() -> None:
    old = run("issue_key", "rue")
    new = run("rotate_key", old[:11], "--grace-minutes", "5")
    key = ApiKey.objects.get()
    assert new != old
    assert new[:11] == old[:11] == key.prefix
    assert len(new) == len(old) == 51
    assert key.digest == digest_key(new)
    assert key.previous_digest == digest_key(old)
    assert key.previous_valid_until is not None


@pytest.mark.django_db
@override_settings(KEY_DEFAULT_RPM=30, KEY_DEFAULT_TOKEN_BUDGET=1000,
                   KEY_DEFAULT_BUDGET_PERIOD="month")  # fmt: skip
def test_new_keys_get_the_operators_defaults_unless_given() -> None:
    run("issue_key", "dee")
    run("issue_key", "dee", "--rpm", "5")
    first, second = ApiKey.objects.order_by("pk")
    assert (first.rpm, first.token_budget, first.budget_period) == (30, 1000, "month")
    assert (second.rpm, second.tpm) == (5, None)
