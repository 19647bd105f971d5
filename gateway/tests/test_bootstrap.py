from __future__ import annotations

import hashlib
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from accounts.keys import digest_key
from accounts.models import ApiKey, BudgetPeriod
from gateway.models import Upstream

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bootstrap() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("bootstrap", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@override_settings(ADMIN_USERNAME="root", ADMIN_PASSWORD="", PUTER_TOKENS=[])
def test_a_first_start_prints_the_generated_password_and_a_key() -> None:
    out, err = bootstrap()

    password_line, key_line = out.splitlines()
    password = password_line.removeprefix("Admin password: ")
    raw = key_line.removeprefix("API key: ")
    assert out == f"Admin password: {password}\nAPI key: {raw}\n"
    assert len(password) == 24
    admin = User.objects.get()
    assert admin.username == "root"
    assert admin.is_staff is True
    assert admin.is_superuser is True
    assert admin.is_active is True
    assert admin.check_password(password) is True
    key = ApiKey.objects.get()
    assert key.user == admin
    assert key.name == "default"
    assert key.digest == digest_key(raw)
    assert key.prefix == raw[:11]
    assert (key.expires_at, key.revoked_at, key.token_budget) == (None, None, None)
    assert key.budget_period == BudgetPeriod.NONE
    assert password not in err
    assert raw not in err


@override_settings(ADMIN_USERNAME="admin", ADMIN_PASSWORD="chosen-by-operator", PUTER_TOKENS=[])
def test_a_first_start_with_admin_password_prints_only_the_key() -> None:
    out, _err = bootstrap()

    raw = out.removeprefix("API key: ").removesuffix("\n")
    assert out == f"API key: {raw}\n"
    assert User.objects.get(username="admin").check_password("chosen-by-operator") is True
    assert ApiKey.objects.get().digest == digest_key(raw)


@override_settings(ADMIN_USERNAME="admin", ADMIN_PASSWORD="", PUTER_TOKENS=[])
def test_later_starts_print_nothing() -> None:
    bootstrap()

    out, err = bootstrap()

    assert out == ""
    assert err == "Imported 0 new Puter token(s) of 0 in PUTER_TOKENS.\n"
    assert User.objects.count() == 1
    assert ApiKey.objects.count() == 1


@override_settings(ADMIN_USERNAME="admin", ADMIN_PASSWORD="", PUTER_TOKENS=[])
def test_any_existing_superuser_makes_it_a_later_start() -> None:
    User.objects.create(username="someone", is_staff=True, is_superuser=True)

    out, _err = bootstrap()

    assert out == ""
    assert not User.objects.filter(username="admin").exists()
    assert not ApiKey.objects.exists()


@override_settings(ADMIN_USERNAME="admin", ADMIN_PASSWORD="", PUTER_TOKENS=[])
def test_a_first_start_refuses_an_admin_name_held_by_an_ordinary_user() -> None:
    User.objects.create(username="admin")

    with pytest.raises(CommandError, match="Cannot create the admin 'admin'"):
        bootstrap()

    assert not ApiKey.objects.exists()


@override_settings(ADMIN_PASSWORD="", PUTER_TOKENS=["tok-a", "tok-b"])
def test_every_start_imports_puter_tokens_once() -> None:
    first_out, first_err = bootstrap()
    with override_settings(PUTER_TOKENS=["tok-a", "tok-b", "tok-c"]):
        second_out, second_err = bootstrap()

    labels = sorted(
        "puter-" + hashlib.sha256(t.encode()).hexdigest()[:8] for t in ("tok-a", "tok-b", "tok-c")
    )
    assert sorted(Upstream.objects.values_list("label", flat=True)) == labels
    assert first_err.endswith("Imported 2 new Puter token(s) of 2 in PUTER_TOKENS.\n")
    assert second_err == "Imported 1 new Puter token(s) of 3 in PUTER_TOKENS.\n"
    assert second_out == ""
    for text in (first_out, first_err, second_out, second_err):
        assert "tok-" not in text
    assert {u.token for u in Upstream.objects.all()} == {"tok-a", "tok-b", "tok-c"}
