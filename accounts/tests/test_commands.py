from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.keys import KeyLimits, digest_key, issue_key
from accounts.models import ApiKey, BudgetPeriod

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    extra: dict[str, Any] = {} if stdin is None else {"stdin": StringIO(stdin)}
    call_command(*args, stdout=out, stderr=err, **extra)
    return out.getvalue(), err.getvalue()


# --- create_user ---------------------------------------------------------------------------


def test_create_user_reads_the_password_from_stdin_and_prints_the_username() -> None:
    out, err = run("create_user", "carol", "--email", "carol@example.com", stdin="blue-Harbor-42\n")

    assert out == "carol\n"
    assert err == "Created user carol.\n"
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.com"
    assert user.is_active is True
    assert user.is_staff is False
    assert user.is_superuser is False
    assert user.check_password("blue-Harbor-42") is True


def test_create_user_with_staff_lets_the_user_into_the_admin() -> None:
    out, _err = run("create_user", "dora", "--staff", stdin="blue-Harbor-42")

    assert out == "dora\n"
    user = User.objects.get(username="dora")
    assert user.is_staff is True
    assert user.is_superuser is False
    assert user.email == ""


def test_create_user_strips_only_one_trailing_newline() -> None:
    run("create_user", "erin", stdin="blue-Harbor-42 \n\n")

    assert User.objects.get(username="erin").check_password("blue-Harbor-42 \n") is True


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_create_user_refuses_an_empty_password(stdin: str) -> None:
    with pytest.raises(CommandError, match="No password on stdin"):
        run("create_user", "frank", stdin=stdin)

    assert not User.objects.filter(username="frank").exists()


def test_create_user_refuses_a_weak_password() -> None:
    with pytest.raises(CommandError, match="too short"):
        run("create_user", "gina", stdin="abc\n")

    assert not User.objects.filter(username="gina").exists()


def test_create_user_refuses_a_taken_username() -> None:
    User.objects.create(username="hank")

    with pytest.raises(CommandError, match="already exists"):
        run("create_user", "hank", stdin="blue-Harbor-42\n")

    assert User.objects.filter(username="hank").count() == 1


# --- issue_key -----------------------------------------------------------------------------


def test_issue_key_prints_only_the_key() -> None:
    out, err = run("issue_key", "alice")

    raw = out.removesuffix("\n")
    assert out == raw + "\n"
    assert raw.startswith("sk-")
    assert len(raw) == 51
    key = ApiKey.objects.get()
    assert key.digest == digest_key(raw)
    assert key.prefix == raw[:11]
    assert err == (
        f"Created user alice (no password, not staff).\nIssued key {key.prefix}… for alice.\n"
    )


def test_issue_key_creates_a_missing_user_without_password_or_staff() -> None:
    run("issue_key", "alice")

    user = User.objects.get(username="alice")
    assert user.is_staff is False
    assert user.is_superuser is False
    assert user.has_usable_password() is False
    key = ApiKey.objects.get()
    assert key.user == user
    assert key.name == ""
    assert key.expires_at is None
    assert key.revoked_at is None
    assert key.last_used_at is None
    assert key.allowed_models == []
    assert key.allowed_ips == []
    assert (key.rpm, key.tpm, key.max_concurrency, key.token_budget) == (None, None, None, None)
    assert key.budget_period == BudgetPeriod.NONE


def test_issue_key_keeps_an_existing_user_as_it_is() -> None:
    bob = User.objects.create(username="bob", is_staff=True)
    bob.set_password("blue-Harbor-42")
    bob.save()

    _out, err = run("issue_key", "bob", "--name", "ci")

    assert err == f"Issued key {ApiKey.objects.get().prefix}… for bob.\n"
    bob.refresh_from_db()
    assert bob.is_staff is True
    assert bob.check_password("blue-Harbor-42") is True
    assert ApiKey.objects.get().user == bob
    assert ApiKey.objects.get().name == "ci"


def test_issue_key_sets_every_limit() -> None:
    out, _err = run(
        "issue_key",
        "alice",
        "--name=laptop",
        "--models=gpt-4o-mini, claude-sonnet-4,",
        "--rpm=60",
        "--tpm=40000",
        "--concurrency=2",
        "--budget-tokens=1000000",
        "--budget-period=month",
        "--expires=2030-01-02T03:04:05+02:00",
        "--allowed-ips=10.0.0.7/24, 192.0.2.1,2001:db8::/32",
    )

    key = ApiKey.objects.get(digest=digest_key(out.strip()))
    assert key.name == "laptop"
    assert key.allowed_models == ["gpt-4o-mini", "claude-sonnet-4"]
    assert key.rpm == 60
    assert key.tpm == 40000
    assert key.max_concurrency == 2
    assert key.token_budget == 1000000
    assert key.budget_period == BudgetPeriod.MONTH
    assert key.expires_at == datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert key.allowed_ips == ["10.0.0.0/24", "192.0.2.1/32", "2001:db8::/32"]


def test_issue_key_date_expiry_is_midnight_utc() -> None:
    run("issue_key", "alice", "--expires", "2030-01-02")

    assert ApiKey.objects.get().expires_at == datetime(2030, 1, 2, tzinfo=UTC)


def test_issue_key_datetime_without_a_zone_is_utc() -> None:
    run("issue_key", "alice", "--expires", "2030-01-02T03:04")

    assert ApiKey.objects.get().expires_at == datetime(2030, 1, 2, 3, 4, tzinfo=UTC)


def test_issue_key_budget_without_a_period_is_a_lifetime_budget() -> None:
    run("issue_key", "alice", "--budget-tokens", "5000")

    key = ApiKey.objects.get()
    assert key.token_budget == 5000
    assert key.budget_period == BudgetPeriod.NONE


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--budget-period", "day"], "a budget period needs a token budget"),
        (["--budget-tokens", "5", "--budget-period", "week"], "must be one of none, day, month"),
        (["--allowed-ips", "10.0.0.0/33"], "'10.0.0.0/33' is not an IP address or CIDR"),
        (["--expires", "next tuesday"], "'next tuesday' is not a date"),
        (["--expires", "2001-01-01"], "--expires 2001-01-01 is already in the past"),
        (["--rpm", "many"], "--rpm must be a whole number, not 'many'"),
        (["--concurrency", "0"], "--concurrency must be at least 1, not 0"),
    ],
)
def test_issue_key_refuses_bad_values_and_creates_nothing(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError) as caught:
        run("issue_key", "alice", *args)

    assert reason in str(caught.value)
    assert caught.value.returncode == 1
    assert not ApiKey.objects.exists()
    assert not User.objects.exists()


def test_issue_key_refuses_a_malformed_username() -> None:
    with pytest.raises(CommandError, match="Enter a valid username"):
        run("issue_key", "no spaces please")

    assert not User.objects.exists()


# --- revoke_key ----------------------------------------------------------------------------


def test_revoke_key_prints_the_prefix_and_revokes_the_key() -> None:
    alice = User.objects.create(username="alice")
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())

    out, err = run("revoke_key", key.prefix)

    key.refresh_from_db()
    assert out == f"{key.prefix}\n"
    assert key.revoked_at is not None
    assert err == f"Key {key.prefix}… of alice revoked at {key.revoked_at.isoformat()}.\n"


def test_revoke_key_twice_keeps_the_first_revocation_time() -> None:
    alice = User.objects.create(username="alice")
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    run("revoke_key", key.prefix)
    first = ApiKey.objects.get().revoked_at

    out, _err = run("revoke_key", key.prefix)

    assert out == f"{key.prefix}\n"
    assert ApiKey.objects.get().revoked_at == first


def test_revoke_key_of_an_unknown_prefix_fails() -> None:
    with pytest.raises(CommandError, match="No key has the prefix 'sk-unknown'"):
        run("revoke_key", "sk-unknown")


def test_a_failing_command_exits_with_status_1_and_a_reason_on_stderr() -> None:
    # A value error stops the command before it touches the database, whichever one runs.
    done = subprocess.run(
        [sys.executable, "manage.py", "issue_key", "alice", "--rpm", "many"],
        cwd=Path(settings.BASE_DIR),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "CommandError: --rpm must be a whole number, not 'many'.\n"
