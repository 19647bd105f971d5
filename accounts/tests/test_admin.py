from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.keys import KeyLimits, digest_key, issue_key
from accounts.ledger_admin import UsageLogAdmin
from accounts.models import ApiKey, BudgetPeriod, UsageDaily, UsageLog

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def operator() -> User:
    return User.objects.create(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def alice() -> User:
    return User.objects.create(username="alice")


def add_key_form(user: User, **changes: str) -> dict[str, Any]:
    form = {
        "user": str(user.pk),
        "name": "laptop",
        "expires_at_0": "2030-01-02",
        "expires_at_1": "00:00:00",
        "allowed_models": "gpt-4o-mini, claude-sonnet-4",
        "allowed_ips": "10.0.0.7/24",
        "rpm": "60",
        "tpm": "",
        "max_concurrency": "2",
        "token_budget": "1000",
        "budget_period": "day",
        "_save": "Save",
    }
    return form | changes


def ledger_row(key: ApiKey, number: int, **fields: Any) -> UsageLog:
    values: dict[str, Any] = {
        "created": T0 + timedelta(seconds=number),
        "request_id": f"req-{number:04d}",
        "key": key,
        "user": key.user,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "latency_ms": 120,
        "ttft_ms": 40,
    }
    return UsageLog.objects.create(**(values | fields))


# --- API keys ------------------------------------------------------------------------------


def test_adding_a_key_shows_the_secret_once(admin_client: Client, alice: User) -> None:
    response = admin_client.post(reverse("admin:accounts_apikey_add"), add_key_form(alice))

    assert response.status_code == 200
    assert response.templates[0].name == "admin/accounts/apikey/key_created.html"
    assert "no-store" in response["Cache-Control"]
    secret = response.context["secret"]
    assert response.content.decode().count(secret) == 1
    key = ApiKey.objects.get()
    assert key.digest == digest_key(secret)
    assert key.prefix == secret[:11]
    assert key.user == alice
    assert key.name == "laptop"
    assert key.expires_at == datetime(2030, 1, 2, tzinfo=UTC)
    assert key.allowed_models == ["gpt-4o-mini", "claude-sonnet-4"]
    assert key.allowed_ips == ["10.0.0.0/24"]
    assert (key.rpm, key.tpm, key.max_concurrency) == (60, None, 2)
    assert (key.token_budget, key.budget_period) == (1000, BudgetPeriod.DAY)
    assert key.revoked_at is None


def test_the_new_secret_is_kept_nowhere_after_the_add_page(
    admin_client: Client, alice: User
) -> None:
    response = admin_client.post(reverse("admin:accounts_apikey_add"), add_key_form(alice))
    secret = response.context["secret"]
    key = ApiKey.objects.get()

    change = admin_client.get(reverse("admin:accounts_apikey_change", args=[key.pk]))
    listing = admin_client.get(reverse("admin:accounts_apikey_changelist"))
    history = admin_client.get(reverse("admin:accounts_apikey_history", args=[key.pk]))

    for page in (change, listing, history):
        assert page.status_code == 200
        assert secret not in page.content.decode()
        assert key.digest not in page.content.decode()
        assert key.prefix in page.content.decode()
    assert secret not in str(dict(admin_client.session.items()))
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert all(secret not in morsel.value for morsel in admin_client.cookies.values())
    assert [str(m) for m in change.context["messages"]] == []
    entry = LogEntry.objects.get()
    assert secret not in entry.object_repr + entry.change_message


def test_the_add_form_refuses_a_bad_network_and_issues_nothing(
    admin_client: Client, alice: User
) -> None:
    form = add_key_form(alice, allowed_ips="10.0.0.0/33")

    response = admin_client.post(reverse("admin:accounts_apikey_add"), form)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "allowed_ips": ["'10.0.0.0/33' is not an IP address or CIDR network"]
    }
    assert not ApiKey.objects.exists()


def test_the_add_form_refuses_a_period_without_a_budget(admin_client: Client, alice: User) -> None:
    form = add_key_form(alice, token_budget="", budget_period="month")

    response = admin_client.post(reverse("admin:accounts_apikey_add"), form)

    assert response.context["adminform"].form.errors == {
        "token_budget": ["a budget period needs a token budget"]
    }
    assert not ApiKey.objects.exists()


def test_the_add_form_refuses_a_zero_limit(admin_client: Client, alice: User) -> None:
    response = admin_client.post(reverse("admin:accounts_apikey_add"), add_key_form(alice, rpm="0"))

    assert response.context["adminform"].form.errors == {
        "rpm": ["Ensure this value is greater than or equal to 1."]
    }
    assert not ApiKey.objects.exists()


def test_editing_a_key_changes_its_limits_but_not_its_secret(
    admin_client: Client, alice: User
) -> None:
    key, raw = issue_key(user=alice, name="old", limits=KeyLimits(rpm=5))
    form = add_key_form(alice, name="new", allowed_ips="", allowed_models="")
    del form["user"]

    response = admin_client.post(reverse("admin:accounts_apikey_change", args=[key.pk]), form)

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "new"
    assert key.rpm == 60
    assert key.allowed_ips == []
    assert key.allowed_models == []
    assert key.digest == digest_key(raw)
    assert key.user == alice


def test_the_change_page_shows_prefix_but_no_digest_field(
    admin_client: Client, alice: User
) -> None:
    key, _raw = issue_key(user=alice, name="ci", limits=KeyLimits())

    response = admin_client.get(reverse("admin:accounts_apikey_change", args=[key.pk]))

    form = response.context["adminform"].form
    assert "digest" not in form.fields
    assert "prefix" not in form.fields
    assert "user" not in form.fields
    assert key.digest not in response.content.decode()


def test_revoke_action_revokes_the_selected_keys(admin_client: Client, alice: User) -> None:
    first, _ = issue_key(user=alice, name="a", limits=KeyLimits())
    second, _ = issue_key(user=alice, name="b", limits=KeyLimits())
    kept, _ = issue_key(user=alice, name="c", limits=KeyLimits())

    response = admin_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    assert [str(m) for m in response.context["messages"]] == ["Revoked 2 key(s)."]
    assert ApiKey.objects.get(pk=first.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=second.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_keys_cannot_be_deleted_from_the_admin(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())

    response = admin_client.post(reverse("admin:accounts_apikey_delete", args=[key.pk]))

    assert response.status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()


def test_the_key_list_filters_by_state(admin_client: Client, alice: User) -> None:
    active, _ = issue_key(user=alice, name="active", limits=KeyLimits())
    revoked, _ = issue_key(user=alice, name="revoked", limits=KeyLimits())
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=T0)

    response = admin_client.get(reverse("admin:accounts_apikey_changelist") + "?state=active")

    assert list(response.context["cl"].result_list) == [active]


def test_non_staff_users_cannot_reach_the_admin(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    for name in ("admin:index", "admin:accounts_apikey_changelist", "admin:accounts_apikey_add"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


# --- the usage ledger ----------------------------------------------------------------------


def test_the_usage_log_list_never_counts_the_ledger(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    for number in range(3):
        ledger_row(key, number)
    url = reverse("admin:accounts_usagelog_changelist")
    queries = [
        "",
        "?status=ok&stream__exact=0&created__gte=2030-05-01+00%3A00%3A00%2B00%3A00",
        f"?key__prefix={key.prefix}&user__username=alice&model=gpt-4o-mini",
        "?q=req-0001",
        "?p=5",
    ]

    for query in queries:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(url + query + ("&" if query else "?") + "_facets=1")
        assert response.status_code == 200
        counting = [
            q["sql"]
            for q in captured.captured_queries
            if "COUNT(" in q["sql"].upper() and "accounts_usagelog" in q["sql"]
        ]
        assert counting == []


def test_the_usage_log_list_shows_every_column(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    ledger_row(key, 1, stream=True)

    response = admin_client.get(reverse("admin:accounts_usagelog_changelist"))

    page = response.content.decode()
    assert "req-0001" in page
    assert f'<a href="?key__prefix={key.prefix}">{key.prefix}…</a>' in page
    assert '<a href="?user__username=alice">alice</a>' in page
    assert '<a href="?model=gpt-4o-mini">gpt-4o-mini</a>' in page
    assert "Page 1" in page
    assert "1000000000000" not in page


def test_an_out_of_range_ledger_page_renders_an_empty_list(
    admin_client: Client, alice: User
) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    ledger_row(key, 1)

    response = admin_client.get(reverse("admin:accounts_usagelog_changelist") + "?p=999999")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert "Page 999999 (no rows)" in response.content.decode()


def test_the_ledger_pages_with_newer_and_older_links(
    admin_client: Client, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(UsageLogAdmin, "list_per_page", 2)
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    rows = [ledger_row(key, number) for number in range(3)]
    url = reverse("admin:accounts_usagelog_changelist")

    first = admin_client.get(url)
    second = admin_client.get(url + "?p=2")

    assert list(first.context["cl"].result_list) == [rows[2], rows[1]]
    assert first.context["cl"].newer_url == ""
    assert first.context["cl"].older_url == "?p=2"
    assert list(second.context["cl"].result_list) == [rows[0]]
    assert second.context["cl"].newer_url == "?p=1"
    assert second.context["cl"].older_url == ""


def test_the_ledger_filters_by_key_user_and_model(admin_client: Client, alice: User) -> None:
    bob = User.objects.create(username="bob")
    alices, _ = issue_key(user=alice, name="", limits=KeyLimits())
    bobs, _ = issue_key(user=bob, name="", limits=KeyLimits())
    mine = ledger_row(alices, 1)
    theirs = ledger_row(bobs, 2, model="claude-sonnet-4")
    url = reverse("admin:accounts_usagelog_changelist")

    by_key = admin_client.get(url + f"?key__prefix={bobs.prefix}")
    by_user = admin_client.get(url + "?user__username=alice")
    by_model = admin_client.get(url + "?model=claude-sonnet-4")

    assert list(by_key.context["cl"].result_list) == [theirs]
    assert list(by_user.context["cl"].result_list) == [mine]
    assert list(by_model.context["cl"].result_list) == [theirs]


def test_the_ledger_search_matches_a_request_id_exactly(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    wanted = ledger_row(key, 1)
    ledger_row(key, 12)

    response = admin_client.get(reverse("admin:accounts_usagelog_changelist") + "?q=req-0001")

    assert list(response.context["cl"].result_list) == [wanted]


def test_the_ledger_is_read_only(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    row = ledger_row(key, 1)

    add = admin_client.get(reverse("admin:accounts_usagelog_add"))
    view = admin_client.get(reverse("admin:accounts_usagelog_change", args=[row.pk]))
    edit = admin_client.post(
        reverse("admin:accounts_usagelog_change", args=[row.pk]), {"model": "changed"}
    )
    delete = admin_client.post(reverse("admin:accounts_usagelog_delete", args=[row.pk]))

    assert (add.status_code, view.status_code, edit.status_code) == (403, 200, 403)
    assert delete.status_code == 403
    assert UsageLog.objects.get(pk=row.pk).model == "gpt-4o-mini"


def test_the_daily_usage_list_is_read_only(admin_client: Client, alice: User) -> None:
    key, _raw = issue_key(user=alice, name="", limits=KeyLimits())
    daily = UsageDaily.objects.create(
        day=T0.date(), key=key, user=alice, model="gpt-4o-mini", requests=3, total_tokens=45
    )

    listing = admin_client.get(reverse("admin:accounts_usagedaily_changelist"))
    add = admin_client.get(reverse("admin:accounts_usagedaily_add"))
    delete = admin_client.post(reverse("admin:accounts_usagedaily_delete", args=[daily.pk]))

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [daily]
    assert (add.status_code, delete.status_code) == (403, 403)
