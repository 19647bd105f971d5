"""The request path's plain statements: one unit, lean cursors, Django's guarantees kept."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection

from accounts.sql_batch import Reads, plain_cursor, run_together

pytestmark = pytest.mark.django_db(transaction=True)

GROUPS = Group._meta.db_table


def test_statements_run_together_all_or_none() -> None:
    add = f"INSERT INTO {GROUPS} (name) VALUES (%s)"
    run_together([(add, ["first"]), (add, ["second"])])
    with pytest.raises(IntegrityError):  # Django's own error class, whatever the cursor
        run_together([(add, ["third"]), (add, ["first"])])
    assert sorted(Group.objects.values_list("name", flat=True)) == ["first", "second"]


def test_reads_gather_subqueries_into_one_row() -> None:
    Group.objects.bulk_create([Group(name="a"), Group(name="b"), Group(name="c")])
    reads = Reads()
    count_at = reads.add(f"SELECT COUNT(*) FROM {GROUPS} WHERE name > %s", ["a"])
    first_at = reads.add(f"SELECT MIN(name) FROM {GROUPS} WHERE name <> %s", ["a"])
    values = reads.values()
    assert values[count_at] == 2
    assert values[first_at] == "b"


def test_the_plain_cursor_goes_through_the_connections_execute_wrappers() -> None:
    seen: list[tuple[str, Any]] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql, list(params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy), plain_cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {GROUPS} WHERE name = %s", ["x"])
        assert cursor.fetchone()[0] == 0
    assert len(seen) == 1
    assert seen[0][1] == ["x"]
    assert "name = " in seen[0][0]
