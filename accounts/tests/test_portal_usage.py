"""The portal's home and usage pages (from the rollup only) and the user's CSV download."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.keys import KeyLimits, issue_key
from accounts.models import ApiKey, BudgetPeriod, UsageDaily, UsageLog, UserLimits
from accounts.usage_export import FIELD_NAMES

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create(username="alice")


@pytest.fixture
def bob() -> User:
    return User.objects.create(username="bob")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def key_of(user: User, name: str = "ci", **limits: Any) -> ApiKey:
    key, _secret = issue_key(user=user, name=name, limits=KeyLimits(**limits))
    return key


def charge(key: ApiKey, day: date, model: str = "gpt-4o-mini", **tally: int) -> UsageDaily:
    values = {"requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "errors": 0}
    values |= tally
    values.setdefault("rejected", 0)
    values["total_tokens"] = values["prompt_tokens"] + values["completion_tokens"]
    return UsageDaily.objects.create(key=key, user=key.user, model=model, day=day, **values)


def ledger_row(key: ApiKey, created: datetime, **fields: Any) -> UsageLog:
    values: dict[str, Any] = {
        "created": created,
        "request_id": f"req-{created.timestamp():.0f}",
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


# --- /usage/ -----------------------------------------------------------------------------


def test_the_usage_page_totals_and_charts_come_from_the_rollup(
    alice_client: Client, alice: User
) -> None:
    laptop, ci = key_of(alice, "laptop"), key_of(alice, "ci")
    charge(laptop, today(), requests=3, prompt_tokens=30, completion_tokens=12)
    charge(ci, today(), "claude-sonnet-4-5", requests=2, prompt_tokens=8, completion_tokens=4)
    charge(ci, today() - timedelta(days=2), requests=1, errors=1, rejected=0)

    page = alice_client.get("/usage/")

    assert page.status_code == 200
    totals = page.context["report"].totals
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (6, 48, 21)
    assert (totals.total_tokens, totals.errors, totals.rejected) == (69, 1, 0)
    chart = page.context["chart"]
    assert len(chart["days"]) == 30
    assert chart["days"][-1] == today().isoformat()
    assert [row["requests"] for row in chart["per_day"][-3:]] == [1, 0, 5]
    assert [(row["label"], row["total_tokens"]) for row in chart["per_model"]] == [
        ("gpt-4o-mini", 57),
        ("claude-sonnet-4-5", 12),
    ]
    assert [(row["label"], row["requests"]) for row in chart["per_key"]] == [
        (f"{laptop.prefix}… (laptop)", 3),
        (f"{ci.prefix}… (ci)", 3),
    ]
    assert 'id="usage-data"' in page.content.decode()


def test_the_usage_page_never_reads_the_ledger(alice_client: Client, alice: User) -> None:
    key = key_of(alice, token_budget=1000, budget_period=BudgetPeriod.MONTH)
    charge(key, today())

    with CaptureQueriesContext(connection) as queries:
        for path in ("/usage/", f"/usage/?key={key.prefix}", "/"):
            assert alice_client.get(path).status_code == 200

    assert not [q["sql"] for q in queries.captured_queries if "accounts_usagelog" in q["sql"]]


def test_a_day_without_usage_shows_no_data_yet_not_zeros(alice_client: Client) -> None:
    page = alice_client.get("/usage/").content.decode()

    assert "No data yet for these days." in page
    assert 'id="usage-data"' not in page
    assert "<dd>0</dd>" not in page


def test_the_date_range_chooses_the_days(alice_client: Client, alice: User) -> None:
    key = key_of(alice)
    charge(key, date(2030, 3, 1), requests=4)
    charge(key, date(2030, 3, 5), requests=7)
    charge(key, date(2030, 3, 9), requests=100)

    page = alice_client.get("/usage/?start=2030-03-01&end=2030-03-05")

    report = page.context["report"]
    assert (report.span.start, report.span.end) == (date(2030, 3, 1), date(2030, 3, 5))
    assert report.totals.requests == 11
    assert page.context["chart"]["days"] == [f"2030-03-0{day}" for day in range(1, 6)]


def test_a_reversed_range_is_refused_and_the_default_shown(alice_client: Client) -> None:
    page = alice_client.get("/usage/?start=2030-03-05&end=2030-03-01")

    assert page.status_code == 200
    assert "The first day comes after the last one." in page.content.decode()
    assert page.context["report"].span.end == today()


def test_one_key_of_ones_own_can_be_chosen_and_anothers_is_404(
    alice_client: Client, alice: User, bob: User
) -> None:
    mine, other = key_of(alice, "mine"), key_of(alice, "other")
    theirs = key_of(bob, "theirs")
    charge(mine, today(), requests=2)
    charge(other, today(), requests=5)
    charge(theirs, today(), requests=9)

    one = alice_client.get(f"/usage/?key={mine.prefix}")
    all_mine = alice_client.get("/usage/")

    assert one.context["report"].totals.requests == 2
    assert all_mine.context["report"].totals.requests == 7
    assert alice_client.get(f"/usage/?key={theirs.prefix}").status_code == 404
    assert alice_client.get(f"/usage/export.csv?key={theirs.prefix}").status_code == 404


def test_remaining_budgets_of_the_user_and_of_each_key(alice_client: Client, alice: User) -> None:
    UserLimits.objects.create(user=alice, token_budget=10_000, budget_period=BudgetPeriod.DAY)
    key = key_of(alice, "ci", token_budget=1000, budget_period=BudgetPeriod.MONTH)
    charge(key, today(), prompt_tokens=200, completion_tokens=50)
    charge(key, today() - timedelta(days=40), prompt_tokens=500, completion_tokens=0)

    page = alice_client.get("/usage/")

    lines = [(b.label, b.budget, b.spent, b.remaining) for b in page.context["budgets"]]
    assert lines == [
        ("All your keys", 10_000, 250, 9750),
        (f"{key.prefix}… (ci)", 1000, 250, 750),
    ]


# --- / -----------------------------------------------------------------------------------


def test_the_home_page_shows_today_this_month_and_active_keys(
    alice_client: Client, alice: User
) -> None:
    key = key_of(alice, "laptop")
    revoked = key_of(alice, "old")
    revoked.revoked_at = timezone.now()
    revoked.save()
    charge(key, today(), requests=3)

    page = alice_client.get("/")

    assert page.context["today"].requests == 3
    assert page.context["month"].requests == 3
    assert page.context["active_keys"] == [key]
    assert page.context["recent_chart"]["requests"][-1] == 3
    assert f"{key.prefix}…" in page.content.decode()


# --- /usage/export.csv -------------------------------------------------------------------


# The sync test client gathers an async stream whole, and says so.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
# The download pages through the database threads, which see committed rows only.
@pytest.mark.django_db(transaction=True)
def test_the_csv_download_lists_only_the_users_rows_of_the_range(
    alice_client: Client, alice: User, bob: User
) -> None:
    key = key_of(alice)
    inside = ledger_row(key, datetime(2030, 3, 2, 10, 0, tzinfo=UTC), request_id="in")
    ledger_row(key, datetime(2030, 3, 4, 0, 0, tzinfo=UTC), request_id="after")
    ledger_row(key_of(bob), datetime(2030, 3, 2, 11, 0, tzinfo=UTC), request_id="bob")

    response = alice_client.get("/usage/export.csv?start=2030-03-01&end=2030-03-03")
    body = b"".join(response).decode()

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="usage-2030-03-01-2030-03-03.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0]) == FIELD_NAMES
    assert [row["request_id"] for row in rows] == ["in"]
    assert rows[0]["created"] == "2030-03-02T10:00:00Z"
    assert rows[0]["key_prefix"] == key.prefix
    assert rows[0]["username"] == "alice"
    assert rows[0]["id"] == str(inside.pk)
