"""The portal's keys page: create within the policy, show once, revoke, rotate, only one's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts.keys import KeyLimits, digest_key, issue_key, load_key_facts
from accounts.models import ApiKey, BudgetPeriod, UserLimits
from accounts.portal_keys import KeyRequest, key_policy, limits_within

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def portal_policy(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.PORTAL_KEY_RPM = 60
    settings.PORTAL_KEY_TPM = 0
    settings.PORTAL_KEY_CONCURRENCY = 4
    settings.PORTAL_KEY_BUDGET_TOKENS = 0
    settings.PORTAL_KEY_BUDGET_PERIOD = "month"
    settings.PORTAL_ROTATION_GRACE_MINUTES = 60
    settings.KEY_DEFAULT_RPM = None
    settings.KEY_DEFAULT_TPM = None
    settings.KEY_DEFAULT_CONCURRENCY = None
    settings.KEY_DEFAULT_TOKEN_BUDGET = None
    settings.KEY_DEFAULT_BUDGET_PERIOD = "none"


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="blue-Harbor-42")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="green-Valley-17")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def key_of(user: User, name: str = "ci") -> ApiKey:
    key, _secret = issue_key(user=user, name=name, limits=KeyLimits())
    return key


def new_key_form(**changes: str) -> dict[str, str]:
    form = {
        "name": "laptop",
        "expires_on": "",
        "allowed_models": "",
        "allowed_ips": "",
        "rpm": "",
        "tpm": "",
        "max_concurrency": "",
        "token_budget": "",
        "budget_period": "",
    }
    return form | changes


# --- who may see what ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/keys/", "/usage/", "/usage/export.csv", "/playground/"])
def test_every_portal_page_sends_a_stranger_to_the_login_page(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_the_login_page_signs_in_and_logout_signs_out(alice: User) -> None:
    client = Client()

    signed_in = client.post("/login/", {"username": "alice", "password": "blue-Harbor-42"})
    home = client.get("/")
    signed_out = client.post("/logout/")

    assert signed_in.status_code == 302
    assert signed_in["Location"] == "/"
    assert home.status_code == 200
    assert "Signed in as <strong>alice</strong>" in home.content.decode()
    assert signed_out.status_code == 302
    assert signed_out["Location"] == "/login/"
    assert client.get("/keys/")["Location"] == "/login/?next=/keys/"


def test_a_wrong_password_is_refused_on_the_login_page(alice: User) -> None:
    response = Client().post("/login/", {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_the_keys_page_lists_only_the_users_own_keys(
    alice_client: Client, alice: User, bob: User
) -> None:
    mine = key_of(alice, "mine")
    theirs = key_of(bob, "theirs")

    page = alice_client.get("/keys/").content.decode()

    assert mine.prefix in page
    assert theirs.prefix not in page
    assert "theirs" not in page


@pytest.mark.parametrize("action", ["revoke", "rotate"])
def test_acting_on_another_users_key_is_404_and_changes_nothing(
    alice_client: Client, bob: User, action: str
) -> None:
    theirs = key_of(bob)
    digest = theirs.digest

    response = alice_client.post(f"/keys/{theirs.prefix}/{action}/")

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert theirs.digest == digest
    assert theirs.previous_digest == ""


def test_a_form_posted_without_its_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/keys/", new_key_form())

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_revoke_and_rotate_take_only_post(alice_client: Client, alice: User) -> None:
    key = key_of(alice)

    assert alice_client.get(f"/keys/{key.prefix}/revoke/").status_code == 405
    assert alice_client.get(f"/keys/{key.prefix}/rotate/").status_code == 405


# --- create --------------------------------------------------------------------------


def test_creating_a_key_shows_its_secret_once_and_keeps_only_its_digest(
    alice_client: Client, alice: User
) -> None:
    response = alice_client.post("/keys/", new_key_form(allowed_models="gpt-4o-mini, gpt-5-nano"))

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    assert response.content.decode().count(secret) == 1
    key = ApiKey.objects.get()
    assert key.user == alice
    assert key.name == "laptop"
    assert key.digest == digest_key(secret)
    assert key.prefix == secret[:11]
    assert key.allowed_models == ["gpt-4o-mini", "gpt-5-nano"]
    later = alice_client.get("/keys/").content.decode()
    assert secret not in later
    assert key.prefix in later
    assert secret not in str(dict(alice_client.session.items()))


def test_blank_limits_take_the_operators_caps(alice_client: Client) -> None:
    alice_client.post("/keys/", new_key_form())

    key = ApiKey.objects.get()
    assert (key.rpm, key.tpm, key.max_concurrency) == (60, None, 4)
    assert (key.token_budget, key.budget_period) == (None, BudgetPeriod.NONE)
    assert key.expires_at is None


def test_stricter_limits_an_expiry_and_a_budget_are_kept(alice_client: Client) -> None:
    form = new_key_form(
        rpm="10",
        max_concurrency="1",
        tpm="5000",
        token_budget="1000",
        budget_period="day",
        expires_on="2099-01-02",
        allowed_ips="10.0.0.7/24",
    )

    alice_client.post("/keys/", form)

    key = ApiKey.objects.get()
    assert (key.rpm, key.tpm, key.max_concurrency) == (10, 5000, 1)
    assert (key.token_budget, key.budget_period) == (1000, BudgetPeriod.DAY)
    assert key.expires_at == datetime(2099, 1, 2, tzinfo=UTC)
    assert key.allowed_ips == ["10.0.0.0/24"]


def test_a_limit_above_the_operators_cap_is_refused_on_its_field(alice_client: Client) -> None:
    response = alice_client.post("/keys/", new_key_form(rpm="61", max_concurrency="9"))

    assert response.status_code == 400
    form = response.context["form"]
    assert form.errors == {
        "rpm": ["At most 60: the operator's limit for keys made here."],
        "max_concurrency": ["At most 4: the operator's limit for keys made here."],
    }
    assert not ApiKey.objects.exists()


def test_a_budget_cap_fixes_the_period_and_caps_the_tokens(settings: Any) -> None:
    settings.PORTAL_KEY_BUDGET_TOKENS = 50_000
    policy = key_policy()

    blank = limits_within(policy=policy, request=KeyRequest(name="a"))
    smaller = limits_within(
        policy=policy, request=KeyRequest(name="b", token_budget=100, budget_period="day")
    )

    assert (blank.token_budget, blank.budget_period) == (50_000, "month")
    assert (smaller.token_budget, smaller.budget_period) == (100, "month")
    with pytest.raises(ValueError, match="At most 50000"):
        limits_within(policy=policy, request=KeyRequest(name="c", token_budget=50_001))


def test_the_operators_defaults_apply_below_the_caps(settings: Any) -> None:
    settings.KEY_DEFAULT_RPM = 20
    settings.KEY_DEFAULT_CONCURRENCY = 99
    settings.KEY_DEFAULT_TOKEN_BUDGET = 7000
    settings.KEY_DEFAULT_BUDGET_PERIOD = "day"

    limits = limits_within(policy=key_policy(), request=KeyRequest(name="a"))

    assert (limits.rpm, limits.max_concurrency, limits.tpm) == (20, 4, None)
    assert (limits.token_budget, limits.budget_period) == (7000, "day")


def test_a_period_without_a_budget_is_refused(alice_client: Client) -> None:
    response = alice_client.post("/keys/", new_key_form(budget_period="month"))

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "budget_period": ["a budget period needs a token budget"]
    }


def test_the_playground_name_is_reserved_and_the_past_is_no_expiry(alice_client: Client) -> None:
    response = alice_client.post("/keys/", new_key_form(name="Playground", expires_on="2001-01-01"))

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "name": ["“playground” is the name of the playground's own key."],
        "expires_on": ["Choose a day after today."],
    }


def test_the_users_key_cap_is_enforced(alice_client: Client, alice: User) -> None:
    UserLimits.objects.create(user=alice, max_keys=1)
    key_of(alice)

    response = alice_client.post("/keys/", new_key_form())

    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == [
        "You hold as many keys as the operator allows: revoke one first."
    ]
    assert ApiKey.objects.count() == 1


# --- revoke and rotate -------------------------------------------------------------------


def test_revoking_an_own_key_stops_it_at_once(alice_client: Client, alice: User) -> None:
    key = key_of(alice)

    response = alice_client.post(f"/keys/{key.prefix}/revoke/", follow=True)

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert response.redirect_chain == [("/keys/", 302)]
    assert f"Key {key.prefix}… revoked" in response.content.decode()
    facts = load_key_facts(key.digest)
    assert facts is not None
    assert facts.revoked is True


def test_rotating_shows_a_new_secret_and_the_old_one_works_for_the_grace(
    alice_client: Client, alice: User
) -> None:
    key, old_secret = issue_key(user=alice, name="ci", limits=KeyLimits())

    response = alice_client.post(f"/keys/{key.prefix}/rotate/")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    new_secret = response.context["secret"]
    assert new_secret.startswith(key.prefix)
    assert new_secret != old_secret
    key.refresh_from_db()
    assert key.digest == digest_key(new_secret)
    assert key.previous_digest == digest_key(old_secret)
    assert key.previous_valid_until is not None
    grace = key.previous_valid_until - timezone.now()
    assert timedelta(minutes=59) < grace <= timedelta(minutes=60)
    old = load_key_facts(digest_key(old_secret))
    assert old is not None
    assert old.id == key.pk
    assert old.secret_retired(timezone.now()) is False
    assert old.secret_retired(key.previous_valid_until) is True
    assert "The previous secret keeps working until" in response.content.decode()


def test_a_revoked_key_cannot_be_rotated(alice_client: Client, alice: User) -> None:
    key = key_of(alice)
    alice_client.post(f"/keys/{key.prefix}/revoke/")

    response = alice_client.post(f"/keys/{key.prefix}/rotate/", follow=True)

    assert response.redirect_chain == [("/keys/", 302)]
    assert "is revoked or expired: it cannot be rotated" in response.content.decode()
    key.refresh_from_db()
    assert key.previous_digest == ""
