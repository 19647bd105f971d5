"""Rows that finish together are written together, each exactly once, whatever happens."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from django.db import DataError, OperationalError, connection
from django.utils import timezone

from accounts.db_thread import call_in_flight
from accounts.models import KeyTokensSecond, UsageDaily, UsageLog, UsageStatus
from gateway import row_writer, usage, usage_journal
from gateway.models import Upstream
from gateway.providers.base import Usage
from gateway.row_writer import rows_written, write_row
from gateway.usage import Outcome, Row, usage_row, write_entry

pytestmark = pytest.mark.django_db(transaction=True)

OK = Outcome(UsageStatus.OK, 200, Usage(10, 5))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each database step of the writer carried."""
    sizes: list[int] = []
    real = usage.record_rows

    def counted(rows: Sequence[Row]) -> list[Row]:
        sizes.append(len(rows))
        return real(rows)

    monkeypatch.setattr(row_writer, "record_rows", counted)
    return sizes


def _write_all(rows: list[Row]) -> None:
    async def main() -> None:
        await asyncio.gather(*(write_row(row) for row in rows))

    asyncio.run(main())


def test_rows_that_finish_together_go_in_one_step_with_their_rollups_summed(
    meter_for: Any, writes: list[int]
) -> None:
    rows = [usage_row(meter_for(f"req-{n}"), OK) for n in range(12)]
    rows += [usage_row(meter_for("req-other", model="gpt-4o"), OK)]
    _write_all(rows)
    assert writes == [13]
    assert UsageLog.objects.count() == 13
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == sorted(
        row.entry["request_id"] for row in rows
    )
    daily = {d.model: (d.requests, d.total_tokens) for d in UsageDaily.objects.all()}
    assert daily == {"gpt-4o-mini": (12, 180), "gpt-4o": (1, 15)}
    assert sum(KeyTokensSecond.objects.values_list("tokens", flat=True)) == 13 * 15


def test_a_row_alone_goes_at_once_and_later_rows_wait_for_the_write_under_way(
    meter_for: Any, writes: list[int]
) -> None:
    async def main() -> None:
        first = asyncio.ensure_future(write_row(usage_row(meter_for("req-first"), OK)))
        await asyncio.sleep(0)  # the first write is under way
        later = [write_row(usage_row(meter_for(f"req-{n}"), OK)) for n in range(5)]
        await asyncio.gather(first, *later)

    asyncio.run(main())
    assert writes == [1, 5]
    assert UsageDaily.objects.get().requests == 6


def test_the_only_calls_row_is_written_before_the_loop_turns_again(
    meter_for: Any, writes: list[int]
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("rows go at once only on SQLite")
    turned: list[str] = []

    async def main() -> None:
        with call_in_flight():
            asyncio.get_running_loop().call_soon(turned.append, "turned")
            await write_row(usage_row(meter_for("req-alone"), OK))
            assert turned == []  # no task, no future: written where the call ran
            assert writes == [1]
            with call_in_flight():  # another call in flight: the writer's task, as before
                await write_row(usage_row(meter_for("req-among-two"), OK))
            assert turned == ["turned"]

    asyncio.run(main())
    assert writes == [1, 1]
    assert UsageDaily.objects.get().requests == 2


def test_a_row_naming_a_deleted_upstream_sends_the_rows_one_by_one(
    meter_for: Any, writes: list[int]
) -> None:
    upstream = Upstream.objects.create(label="gone", provider="puter")
    orphan = meter_for("req-orphan")
    orphan.upstream_id = upstream.pk
    rows = [usage_row(meter_for("req-a"), OK), usage_row(orphan, OK)]
    upstream.delete()
    _write_all(rows)
    assert writes == [2]  # one step: the refused transaction, then each row on its own
    logged = dict(UsageLog.objects.values_list("request_id", "upstream_id"))
    assert logged == {"req-a": None, "req-orphan": None}
    assert UsageDaily.objects.get().requests == 2


def test_rows_the_database_refuses_are_journalled_each_and_replayed_once(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def database_down(*_args: Any) -> None:
        raise OperationalError("the database is down")

    monkeypatch.setattr(usage, "_insert", database_down)
    _write_all([usage_row(meter_for(f"req-{n}"), OK) for n in range(3)])
    journalled = [r for r in caplog.records if "usage row journalled" in r.getMessage()]
    assert len(journalled) == 3
    assert UsageLog.objects.count() == 0
    monkeypatch.undo()
    assert usage_journal.replay(write_entry) == 3
    assert usage_journal.replay(write_entry) == 0
    assert UsageDaily.objects.get().requests == 3


def test_a_cancelled_writer_still_gets_its_row_written(meter_for: Any) -> None:
    async def main() -> None:
        waiting = asyncio.ensure_future(write_row(usage_row(meter_for("req-gone"), OK)))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await rows_written()

    asyncio.run(main())
    assert list(UsageLog.objects.values_list("request_id", flat=True)) == ["req-gone"]


def test_rows_of_a_burst_larger_than_one_step_go_in_several(
    meter_for: Any, writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(row_writer, "MAX_ROWS", 4)
    _write_all([usage_row(meter_for(f"req-{n}"), OK) for n in range(10)])
    assert writes == [4, 4, 2]
    assert UsageLog.objects.count() == 10
    assert UsageDaily.objects.get().requests == 10


def test_rows_keep_the_latency_of_their_own_request(meter_for: Any) -> None:
    meter = meter_for("req-timed")
    meter.created = timezone.now() - dt.timedelta(seconds=2)
    meter.started -= 2
    row = usage_row(meter, OK)
    _write_all([row])
    assert UsageLog.objects.get().latency_ms == row.entry["latency_ms"] >= 2000


def test_a_row_the_database_refuses_for_its_content_does_not_stop_the_others(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [usage_row(meter_for(f"req-{n}"), OK) for n in range(3)]
    real = usage.write_entry

    def refuses_the_second(entry: dict[str, Any], **options: Any) -> bool:
        if entry["request_id"] == "req-1":
            raise DataError("value too long")
        return real(entry, **options)

    monkeypatch.setattr(usage, "_written_together", lambda _rows: False)
    monkeypatch.setattr(usage, "write_entry", refuses_the_second)
    _write_all(rows)
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == ["req-0", "req-2"]
    refused = [r for r in caplog.records if r.getMessage() == "usage row not written"]
    assert len(refused) == 1
    assert list(usage_journal.journal_dir().glob("usage-*.jsonl")) == []
