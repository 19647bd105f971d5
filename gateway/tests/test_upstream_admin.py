from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from gateway.models import Provider, Upstream, UpstreamState
from gateway.upstreams import add_upstream

pytestmark = pytest.mark.django_db

TOKEN = "puter-secret-token-0123456789"


@pytest.fixture
def admin_client() -> Client:
    operator = User.objects.create(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    return client


def upstream_form(**changes: str) -> dict[str, Any]:
    form = {
        "label": "pool-1",
        "provider": "puter",
        "base_url": "",
        "token": TOKEN,
        "account": "acct",
        "weight": "2",
        "max_concurrency": "4",
        "priority": "1",
        "models": "gpt-4o-mini, claude-sonnet-4",
        "_save": "Save",
    }
    return form | changes


def raw_upstream_rows() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_upstream")
        return repr(cursor.fetchall())


def test_adding_an_upstream_stores_the_token_encrypted(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:gateway_upstream_add"), upstream_form())

    assert response.status_code == 302
    upstream = Upstream.objects.get()
    assert upstream.label == "pool-1"
    assert upstream.provider == Provider.PUTER
    assert upstream.account == "acct"
    assert (upstream.weight, upstream.max_concurrency, upstream.priority) == (2, 4, 1)
    assert upstream.models == ["gpt-4o-mini", "claude-sonnet-4"]
    assert upstream.enabled is True
    assert upstream.state == UpstreamState.HEALTHY
    assert upstream.token == TOKEN
    assert TOKEN not in raw_upstream_rows()


def test_the_add_form_requires_a_token(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:gateway_upstream_add"), upstream_form(token=""))

    assert response.context["adminform"].form.errors == {"token": ["This field is required."]}
    assert not Upstream.objects.exists()


def test_the_add_form_applies_the_same_validation_as_add_upstream(admin_client: Client) -> None:
    add_upstream(label="taken", token="other")
    form = upstream_form(label="taken", provider="openai", weight="0", max_concurrency="0")

    response = admin_client.post(reverse("admin:gateway_upstream_add"), form)

    assert response.context["adminform"].form.errors == {
        "label": ["An upstream labelled 'taken' already exists."],
        "base_url": ["An OpenAI-compatible upstream needs a base URL."],
        "weight": ["The weight must be at least 1."],
        "max_concurrency": ["The concurrency cap must be at least 1."],
    }
    assert Upstream.objects.count() == 1


def test_a_form_error_does_not_send_the_token_back(admin_client: Client) -> None:
    form = upstream_form(provider="openai")

    response = admin_client.post(reverse("admin:gateway_upstream_add"), form)

    assert response.status_code == 200
    assert TOKEN not in response.content.decode()


def test_editing_with_a_blank_token_keeps_the_current_one(admin_client: Client) -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)
    form = upstream_form(token="", weight="7")

    response = admin_client.post(reverse("admin:gateway_upstream_change", args=[upstream.pk]), form)

    assert response.status_code == 302
    upstream.refresh_from_db()
    assert upstream.weight == 7
    assert upstream.token == TOKEN


def test_editing_with_a_new_token_replaces_it(admin_client: Client) -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)
    form = upstream_form(token="rotated-token-987")

    admin_client.post(reverse("admin:gateway_upstream_change", args=[upstream.pk]), form)

    upstream.refresh_from_db()
    assert upstream.token == "rotated-token-987"
    assert "rotated-token-987" not in raw_upstream_rows()


def test_editing_keeps_its_own_label_valid(admin_client: Client) -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)

    response = admin_client.post(
        reverse("admin:gateway_upstream_change", args=[upstream.pk]), upstream_form(token="")
    )

    assert response.status_code == 302


def test_the_upstream_pages_never_show_the_token(admin_client: Client) -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN, models=["gpt-4o-mini"])

    pages = [
        admin_client.get(reverse("admin:gateway_upstream_changelist")),
        admin_client.get(reverse("admin:gateway_upstream_change", args=[upstream.pk])),
        admin_client.get(reverse("admin:gateway_upstream_history", args=[upstream.pk])),
    ]

    for page in pages:
        assert page.status_code == 200
        assert TOKEN not in page.content.decode()
        assert upstream.token_encrypted not in page.content.decode()
        assert "pool-1" in page.content.decode()
    form = pages[1].context["adminform"].form
    assert "token_encrypted" not in form.fields
    assert form.fields["token"].required is False
    assert form.initial["models"] == "gpt-4o-mini"


def test_the_state_fields_are_read_only(admin_client: Client) -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)

    response = admin_client.get(reverse("admin:gateway_upstream_change", args=[upstream.pk]))

    form = response.context["adminform"].form
    for name in ("enabled", "state", "cooldown_until", "consecutive_failures", "last_error"):
        assert name not in form.fields


def test_enable_and_disable_actions(admin_client: Client) -> None:
    first = add_upstream(label="pool-1", token="t1")
    second = add_upstream(label="pool-2", token="t2")
    Upstream.objects.filter(pk=second.pk).update(
        state=UpstreamState.COOLING, consecutive_failures=3
    )
    url = reverse("admin:gateway_upstream_changelist")

    off = admin_client.post(
        url, {"action": "disable_selected", "_selected_action": [first.pk]}, follow=True
    )
    on = admin_client.post(
        url, {"action": "enable_selected", "_selected_action": [second.pk]}, follow=True
    )

    assert [str(m) for m in off.context["messages"]] == ["Disabled 1 upstream(s)."]
    assert [str(m) for m in on.context["messages"]] == ["Enabled 1 upstream(s)."]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.enabled is False
    assert (second.enabled, second.state, second.consecutive_failures) == (
        True,
        UpstreamState.HEALTHY,
        0,
    )


def test_non_staff_users_cannot_reach_the_upstream_admin() -> None:
    client = Client()
    client.force_login(User.objects.create(username="alice"))

    response = client.get(reverse("admin:gateway_upstream_changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
