"""Rows the database could not take wait in the local journal and are written exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import OperationalError

from accounts.db_thread import run_in_db_thread
from accounts.models import UsageDaily, UsageLog, UsageStatus
from gateway import usage, usage_journal
from gateway.providers.base import Usage
from gateway.usage import Outcome, ledger_entry, record_rows, usage_row, write_entry

pytestmark = pytest.mark.django_db(transaction=True)


OK = Outcome(UsageStatus.OK, 200, Usage(10, 5))


def test_a_row_the_database_refuses_is_journalled_then_replayed_once(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(entry: dict[str, Any], **_options: Any) -> bool:
        raise OperationalError("the database is down")

    monkeypatch.setattr(usage, "write_entry", database_down)
    record_rows([usage_row(meter_for("req-down"), OK)])
    assert UsageLog.objects.count() == 0
    lines = list(usage_journal.journal_dir().glob("usage-*.jsonl"))
    assert len(lines) == 1
    assert lines[0].read_text().count("\n") == 1
    monkeypatch.undo()
    # The database answers again: the replay follows the next row.
    record_rows([usage_row(meter_for("req-back"), OK)])
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == ["req-back", "req-down"]
    assert lines[0].stat().st_size == 0
    daily = UsageDaily.objects.get()
    assert (daily.requests, daily.total_tokens) == (2, 30)
    assert usage_journal.replay(write_entry) == 0
    assert UsageLog.objects.count() == 2


def test_a_replay_cut_short_never_writes_a_row_twice(meter_for: Any) -> None:
    first, second = (ledger_entry(meter_for(f"req-{n}"), OK) for n in range(2))
    usage_journal.append(first)
    usage_journal.append(second)
    assert write_entry(first) is True  # written before the replay was cut short
    assert usage_journal.replay(write_entry) == 1
    assert sorted(UsageLog.objects.values_list("request_id", flat=True)) == ["req-0", "req-1"]
    assert UsageDaily.objects.get().requests == 2


def test_journalled_rows_are_replayed_without_waiting_for_traffic(
    meter_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage_journal.append(ledger_entry(meter_for("req-quiet"), OK))
    monkeypatch.setattr(usage, "JOURNAL_REPLAY_EVERY", 0.05)

    async def a_while_of_quiet() -> None:
        replayer = asyncio.get_running_loop().create_task(usage.replay_journal_forever())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await run_in_db_thread(UsageLog.objects.count):
                break
        replayer.cancel()

    asyncio.run(a_while_of_quiet())
    assert list(UsageLog.objects.values_list("request_id", flat=True)) == ["req-quiet"]
