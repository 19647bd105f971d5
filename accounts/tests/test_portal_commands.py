"""`export_usage` and `prune_usage`: the ledger out, and old ledger rows away."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.keys import KeyLimits, issue_key
from accounts.models import ApiKey, UsageDaily, UsageLog
from accounts.usage_pruning import prune_ledger

pytestmark = pytest.mark.django_db

FIELDS = [
    "id",
    "created",
    "entry_id",
    "request_id",
    "key",
    "user",
    "endpoint",
    "model",
    "upstream_model",
    "upstream",
    "stream",
    "status",
    "http_status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_estimated",
    "usd_cents",
    "latency_ms",
    "ttft_ms",
    "error",
    "key_prefix",
    "username",
]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def key_of(username: str) -> ApiKey:
    user, _ = User.objects.get_or_create(username=username)
    key, _secret = issue_key(user=user, name="ci", limits=KeyLimits())
    return key


def row(key: ApiKey, created: datetime, request_id: str, **fields: Any) -> UsageLog:
    values: dict[str, Any] = {
        "created": created,
        "request_id": request_id,
        "key": key,
        "user": key.user,
        "endpoint": "chat.completions",
        "model": "gpt-4o-mini",
        "upstream_model": "gpt-4o-mini",
        "stream": True,
        "status": "ok",
        "http_status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "latency_ms": 900,
        "ttft_ms": 110,
    }
    return UsageLog.objects.create(**(values | fields))


@pytest.fixture
def ledger() -> dict[str, UsageLog]:
    alice, bob = key_of("alice"), key_of("bob")
    return {
        "early": row(alice, datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC), "req-early"),
        "alice": row(
            alice,
            datetime(2030, 2, 1, 8, 30, 0, 250000, tzinfo=UTC),
            "req-alice",
            status="client_disconnected",
            usage_estimated=True,
            ttft_ms=None,
        ),
        "bob": row(bob, datetime(2030, 2, 2, 9, 0, tzinfo=UTC), "req-bob", error='x, "y"'),
    }


def test_export_usage_writes_one_csv_row_per_ledger_row(ledger: dict[str, UsageLog]) -> None:
    out, err = run("export_usage")

    assert err == ""
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == FIELDS
    alice = ledger["alice"]
    assert rows[2] == [
        str(alice.pk),
        "2030-02-01T08:30:00.250000Z",
        str(alice.entry_id),
        "req-alice",
        str(alice.key_id),
        str(alice.user_id),
        "chat.completions",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "",
        "true",
        "client_disconnected",
        "200",
        "12",
        "30",
        "42",
        "true",
        "",
        "900",
        "",
        "",
        alice.key.prefix,
        "alice",
    ]
    assert [r[3] for r in rows[1:]] == ["req-early", "req-alice", "req-bob"]
    assert rows[3][FIELDS.index("error")] == 'x, "y"'


def test_export_usage_as_json_lines_with_since_and_user(ledger: dict[str, UsageLog]) -> None:
    out, _err = run("export_usage", "--since", "2030-02-01", "--user", "alice", "--format", "jsonl")

    objects = [orjson.loads(line) for line in out.splitlines()]
    alice = ledger["alice"]
    assert objects == [
        {
            "id": alice.pk,
            "created": "2030-02-01T08:30:00.250000Z",
            "entry_id": str(alice.entry_id),
            "request_id": "req-alice",
            "key": alice.key_id,
            "user": alice.user_id,
            "endpoint": "chat.completions",
            "model": "gpt-4o-mini",
            "upstream_model": "gpt-4o-mini",
            "upstream": None,
            "stream": True,
            "status": "client_disconnected",
            "http_status": 200,
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "total_tokens": 42,
            "usage_estimated": True,
            "usd_cents": None,
            "latency_ms": 900,
            "ttft_ms": None,
            "error": "",
            "key_prefix": alice.key.prefix,
            "username": "alice",
        }
    ]


def test_export_usage_by_key_prefix(ledger: dict[str, UsageLog]) -> None:
    out, _err = run("export_usage", "--key", ledger["bob"].key.prefix, "--format", "jsonl")

    assert [orjson.loads(line)["request_id"] for line in out.splitlines()] == ["req-bob"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "carol"], "No user is named 'carol'."),
        (["--key", "sk-nothing1"], "No key has the prefix 'sk-nothing1'."),
        (["--since", "yesterday"], "--since must be a date (YYYY-MM-DD), not 'yesterday'."),
    ],
)
def test_export_usage_refuses_what_names_nothing(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run("export_usage", *args)


def test_export_usage_reads_the_ledger_through_one_streaming_cursor(
    ledger: dict[str, UsageLog],
) -> None:
    with CaptureQueriesContext(connection) as queries:
        run("export_usage")

    selects = [q["sql"] for q in queries.captured_queries if "accounts_usagelog" in q["sql"]]
    assert len(selects) == 1
    assert "LIMIT" not in selects[0]


# --- prune_usage -------------------------------------------------------------------------


def test_prune_usage_deletes_old_ledger_rows_and_keeps_the_rollup() -> None:
    key = key_of("alice")
    now = timezone.now()
    old = [row(key, now - timedelta(days=40, minutes=n), f"old-{n}") for n in range(3)]
    recent = row(key, now - timedelta(days=5), "recent")
    UsageDaily.objects.create(
        key=key, user=key.user, model="gpt-4o-mini", day=date(2030, 1, 1), requests=4
    )

    out, err = run("prune_usage", "--older-than", "30")

    assert out == "3\n"
    assert "Deleted 3 ledger rows created before" in err
    assert list(UsageLog.objects.values_list("request_id", flat=True)) == ["recent"]
    assert UsageDaily.objects.get().requests == 4
    assert recent.pk not in [r.pk for r in old]


def test_prune_deletes_by_bounded_primary_key_ranges() -> None:
    key = key_of("alice")
    now = timezone.now()
    for n in range(7):
        row(key, now - timedelta(days=10), f"old-{n}")
    row(key, now, "new")

    with CaptureQueriesContext(connection) as queries:
        deleted = prune_ledger(before=now - timedelta(days=1), batch=3)

    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert deleted == 7
    assert len(deletes) == 3
    assert all('"id" >= ' in sql and '"id" < ' in sql for sql in deletes)
    assert list(UsageLog.objects.values_list("request_id", flat=True)) == ["new"]


def test_prune_usage_with_nothing_old_deletes_nothing() -> None:
    row(key_of("alice"), timezone.now(), "new")

    out, _err = run("prune_usage", "--older-than", "30")

    assert out == "0\n"
    assert UsageLog.objects.count() == 1
