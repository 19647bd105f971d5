"""Rows that finish together are written together, each exactly once, whatever happens."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from django.db import DataError, OperationalError, connection
from django.utils import timezone

from accounts import db_on_loop
from accounts.db_on_loop import LoopStepFailed
from accounts.db_thread import call_in_flight, run_in_db_thread
from accounts.models import ApiKey, KeyTokensSecond, UsageDaily, UsageLog, UsageStatus
from accounts.sql_batch import Statement
from gateway import row_writer, usage, usage_journal
from gateway.models import Upstream
from gateway.providers.base import Usage
from gateway.row_writer import rows_written, write_row
from gateway.usage import Outcome, Row, ledger_entry, usage_row, write_entry

pytestmark = pytest.mark.django_db(transaction=True)

OK = Outcome(UsageStatus.OK, 200, Usage(10, 5))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each database step of the writer carried: from the event loop
    (PostgreSQL) or the careful way (SQLite, and whatever the loop's step could not)."""
    sizes: list[int] = []
    careful, on_loop = usage.record_rows, usage.rows_statements

    def counted(rows: Sequence[Row]) -> list[Row]:
        sizes.append(len(rows))
        return careful(rows)

    def counted_on_loop(rows: Sequence[Row]) -> list[Statement]:
        sizes.append(len(rows))
        return on_loop(rows)

    monkeypatch.setattr(row_writer, "record_rows", counted)
    monkeypatch.setattr(row_writer, "rows_statements", counted_on_loop)
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
    # On PostgreSQL the loop's step is refused first, then the careful one: the refused
    # transaction, then each row on its own.
    assert writes == ([2] if connection.vendor == "sqlite" else [2, 2])
    logged = dict(UsageLog.objects.values_list("request_id", "upstream_id"))
    assert logged == {"req-a": None, "req-orphan": None}
    assert UsageDaily.objects.get().requests == 2


def test_rows_the_database_refuses_are_journalled_each_and_replayed_once(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def database_down(*_args: Any) -> None:
        raise OperationalError("the database is down")

    async def down_from_the_loop(*_args: Any) -> None:
        raise LoopStepFailed("OperationalError")

    monkeypatch.setattr(usage, "_insert", database_down)
    monkeypatch.setattr(row_writer, "run_together_on_loop", down_from_the_loop)
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

    async def refused_on_the_loop(*_args: Any) -> None:
        raise LoopStepFailed("DataError")

    monkeypatch.setattr(row_writer, "run_together_on_loop", refused_on_the_loop)
    monkeypatch.setattr(usage, "_written_together", lambda _rows: False)
    monkeypatch.setattr(usage, "write_entry", refuses_the_second)
    _write_all(rows)
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == ["req-0", "req-2"]
    refused = [r for r in caplog.records if r.getMessage() == "usage row not written"]
    assert len(refused) == 1
    assert list(usage_journal.journal_dir().glob("usage-*.jsonl")) == []


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="rows go from the event loop on PostgreSQL"
)


@postgresql_only
def test_rows_go_from_the_event_loop_with_no_database_thread_in_the_way(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_careful_step(*_args: Any) -> None:
        raise AssertionError("the row went to a database thread")

    monkeypatch.setattr(row_writer, "run_db_step", no_careful_step)
    rows = [usage_row(meter_for(f"req-{n}"), OK) for n in range(3)]

    async def main() -> None:
        await write_row(rows[0])
        await asyncio.gather(*(write_row(row) for row in rows[1:]))

    asyncio.run(main())
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == [
        "req-0",
        "req-1",
        "req-2",
    ]
    assert UsageDaily.objects.get().requests == 3
    # The hint for people still goes, in a database thread, once.
    assert ApiKey.objects.get(pk=rows[0].entry["key_id"]).last_used_at is not None


@postgresql_only
def test_a_loop_connection_the_server_dropped_gives_way_to_a_thread_then_to_a_new_one(
    meter_for: Any, writes: list[int]
) -> None:
    def drop(backend: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    backends: list[int | None] = []

    async def main() -> None:
        for number in range(3):
            await write_row(usage_row(meter_for(f"req-{number}"), OK))
            own = db_on_loop._connections.get(asyncio.get_running_loop())
            backends.append(own.info.backend_pid if own is not None else None)
            if own is not None and number == 0:
                await run_in_db_thread(drop, own.info.backend_pid)

    asyncio.run(main())
    # The second row's step on the loop failed on the dropped connection, which is gone;
    # the careful step wrote the row; the third row's step opened a new connection.
    assert writes == [1, 1, 1, 1]
    assert backends[0] is not None
    assert backends[1] is None
    assert backends[2] not in (None, backends[0])
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == [
        "req-0",
        "req-1",
        "req-2",
    ]
    assert UsageDaily.objects.get().requests == 3


@postgresql_only
def test_a_step_cut_short_on_the_loop_leaves_its_row_in_the_journal_written_once(
    meter_for: Any,
) -> None:
    row = usage_row(meter_for("req-cut"), OK)
    blocker = psycopg.connect(**connection.get_connection_params())
    try:
        # The row's rollup waits for this lock until the loop shuts down around it.
        blocker.execute(f"LOCK TABLE {UsageDaily._meta.db_table} IN EXCLUSIVE MODE")

        async def main() -> None:
            writing = asyncio.ensure_future(write_row(row))
            for _ in range(500):
                if _waiting_for_a_lock(blocker):
                    break
                await asyncio.sleep(0.01)
            assert not writing.done(), "the row's step never waited for the lock"
            # Returning leaves the write under way: asyncio.run cancels it, as a shutdown.

        asyncio.run(main())
    finally:
        blocker.close()
    assert UsageLog.objects.count() == 0
    assert usage_journal.replay(write_entry) == 1
    assert usage_journal.replay(write_entry) == 0
    assert list(UsageLog.objects.values_list("request_id", flat=True)) == ["req-cut"]
    assert UsageDaily.objects.get().requests == 1


def _waiting_for_a_lock(blocker: psycopg.Connection[Any]) -> bool:
    waiting = blocker.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()
    return bool(waiting and waiting[0])


def test_a_replay_that_fails_after_the_rows_are_written_fails_none_of_them(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    usage_journal.append(ledger_entry(meter_for("req-journalled"), OK))

    def database_gone(_write: Any) -> int:
        raise OperationalError("the database went away after the commit")

    monkeypatch.setattr(usage_journal, "replay", database_gone)
    rows = [usage_row(meter_for(f"req-{n}"), OK) for n in range(2)]
    _write_all(rows)  # no error reaches the writers: their rows are in
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == ["req-0", "req-1"]
    assert any("journal replay put off" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert usage_journal.replay(write_entry) == 1  # the journalled row waited for this
