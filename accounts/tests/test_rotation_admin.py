"""The admin's rotate action: one new secret, shown once, on the same key record."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.keys import KeyLimits, digest_key, issue_key
from accounts.models import ApiKey


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
def test_rotating_a_key_shows_its_new_secret_once(admin_client: Client) -> None:
    user = User.objects.create(username="alma")
    key, old = issue_key(user=user, name="ci", limits=KeyLimits())
    page = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "rotate_selected", "_selected_action": [str(key.pk)]},
    )
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    key.refresh_from_db()
    html = page.content.decode()
    secret = html.split('id="new-api-key" value="', 1)[1].split('"', 1)[0]
    assert secret.startswith(key.prefix)
    assert key.digest == digest_key(secret)
    assert key.previous_digest == digest_key(old)
    assert "keeps working for 60 minutes" in html
    assert ApiKey.objects.count() == 1
    change = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert secret not in change
    assert key.digest not in change


@pytest.mark.django_db
def test_rotating_needs_exactly_one_key(admin_client: Client) -> None:
    user = User.objects.create(username="bo")
    keys = [issue_key(user=user, name=str(n), limits=KeyLimits())[0] for n in range(2)]
    page = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "rotate_selected", "_selected_action": [str(k.pk) for k in keys]},
        follow=True,
    )
    assert "Select exactly one active key." in page.content.decode()
    assert {k.digest for k in keys} == set(ApiKey.objects.values_list("digest", flat=True))
