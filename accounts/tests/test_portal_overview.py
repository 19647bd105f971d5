"""The operator's overview in the admin: usage across users, rates, the pool, the download."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.keys import KeyLimits, issue_key
from accounts.models import ApiKey, UsageDaily, UsageLog
from gateway.models import Upstream, UpstreamState

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def alice() -> User:
    return User.objects.create(username="alice")


@pytest.fixture
def bob() -> User:
    return User.objects.create(username="bob")


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def key_of(user: User, name: str = "ci") -> ApiKey:
    key, _secret = issue_key(user=user, name=name, limits=KeyLimits())
    return key


def charge(key: ApiKey, day: date, model: str, requests: int, tokens: int, **more: int) -> None:
    UsageDaily.objects.create(
        key=key,
        user=key.user,
        model=model,
        day=day,
        requests=requests,
        prompt_tokens=tokens,
        completion_tokens=0,
        total_tokens=tokens,
        errors=more.get("errors", 0),
        rejected=more.get("rejected", 0),
    )


def upstream(label: str, **fields: object) -> Upstream:
    row = Upstream(label=label, **fields)
    row.token = "ok-" + label
    row.save()
    return row


@pytest.mark.parametrize("path", ["/admin/overview/", "/admin/overview/export.csv"])
def test_a_non_staff_user_is_sent_to_the_admin_login(alice: User, path: str) -> None:
    client = Client()
    client.force_login(alice)

    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith(f"/admin/login/?next={path}")
    assert client.get("/admin/").status_code == 302


def test_the_admin_index_links_to_the_overview(operator_client: Client) -> None:
    page = operator_client.get("/admin/").content.decode()

    assert 'href="/admin/overview/" id="overview-link"' in page


def test_the_overview_shows_usage_across_users_keys_and_models(
    operator_client: Client, alice: User, bob: User
) -> None:
    alice_key, bob_key = key_of(alice, "laptop"), key_of(bob, "ci")
    charge(alice_key, today(), "gpt-4o-mini", requests=8, tokens=800, errors=2)
    charge(bob_key, today(), "claude-sonnet-4-5", requests=2, tokens=1500, rejected=1)
    charge(bob_key, today() - timedelta(days=60), "gpt-4o-mini", requests=50, tokens=50)

    page = operator_client.get("/admin/overview/")

    assert page.status_code == 200
    report = page.context["report"]
    assert (report.totals.requests, report.totals.total_tokens) == (10, 2300)
    assert (report.totals.errors, report.totals.rejected) == (2, 1)
    assert report.totals.error_percent == 20.0
    assert report.totals.refusal_percent == 10.0
    assert [(s.label, s.tally.total_tokens) for s in report.per_user] == [
        ("bob", 1500),
        ("alice", 800),
    ]
    assert [s.label for s in report.per_key] == [
        f"{bob_key.prefix}… (ci)",
        f"{alice_key.prefix}… (laptop)",
    ]
    assert [s.label for s in report.per_model] == ["claude-sonnet-4-5", "gpt-4o-mini"]
    html = page.content.decode()
    assert 'id="error-rate">20.0%' in html
    assert 'id="refusal-rate">10.0%' in html


def test_the_overview_narrows_to_one_user_and_says_when_nobody_has_that_name(
    operator_client: Client, alice: User, bob: User
) -> None:
    charge(key_of(alice), today(), "gpt-4o-mini", requests=3, tokens=30)
    charge(key_of(bob), today(), "gpt-4o-mini", requests=4, tokens=40)

    one = operator_client.get("/admin/overview/?user=bob")
    nobody = operator_client.get("/admin/overview/?user=carol")

    assert one.context["report"].totals.requests == 4
    assert nobody.status_code == 404
    assert "No user is named “carol”." in nobody.content.decode()
    assert operator_client.get("/admin/overview/export.csv?user=carol").status_code == 404


def test_the_overview_shows_the_pool_with_state_last_error_and_cooldown(
    operator_client: Client,
) -> None:
    now = timezone.now()
    upstream("main", priority=1)
    upstream(
        "spare",
        state=UpstreamState.COOLING,
        cooldown_until=now + timedelta(seconds=90),
        consecutive_failures=3,
        last_error="HTTP 503 from upstream",
    )
    upstream("old", enabled=False, last_error="401 token refused")

    page = operator_client.get("/admin/overview/")

    pool = page.context["pool"]
    assert [(u.label, u.shown_state) for u in pool] == [
        ("main", "healthy"),
        ("old", "disabled"),
        ("spare", "cooling"),
    ]
    assert 85 <= (pool[2].cooling_seconds_left or 0) <= 91
    assert page.context["chart"]["pool"] == {"healthy": 1, "cooling": 1, "disabled": 1}
    html = page.content.decode()
    assert "HTTP 503 from upstream" in html
    assert "401 token refused" in html
    assert "No data yet for these days." in html


def test_the_overview_never_reads_the_ledger(operator_client: Client, alice: User) -> None:
    charge(key_of(alice), today(), "gpt-4o-mini", requests=3, tokens=30)

    with CaptureQueriesContext(connection) as queries:
        assert operator_client.get("/admin/overview/?user=alice").status_code == 200
        assert operator_client.get("/admin/overview/").status_code == 200

    assert not [q["sql"] for q in queries.captured_queries if "accounts_usagelog" in q["sql"]]


# The sync test client gathers an async stream whole, and says so.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
# The download pages through the database threads, which see committed rows only.
@pytest.mark.django_db(transaction=True)
def test_the_ledger_download_streams_the_rows_of_the_range(
    operator_client: Client, alice: User, bob: User
) -> None:
    for number, key in enumerate([key_of(alice), key_of(bob)]):
        UsageLog.objects.create(
            created=datetime(2030, 3, 2, 10, number, tzinfo=UTC),
            request_id=f"req-{number}",
            key=key,
            user=key.user,
            endpoint="chat.completions",
            model="gpt-4o-mini",
            status="ok",
            http_status=200,
        )

    response = operator_client.get("/admin/overview/export.csv?start=2030-03-01&end=2030-03-02")

    rows = list(csv.DictReader(io.StringIO(b"".join(response).decode())))
    assert [(row["request_id"], row["username"]) for row in rows] == [
        ("req-0", "alice"),
        ("req-1", "bob"),
    ]
    assert response["Content-Disposition"] == (
        'attachment; filename="ledger-2030-03-01-2030-03-02.csv"'
    )
