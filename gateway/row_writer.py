"""Ledger rows written together when their requests finish together.

A row is written as soon as it is ready; rows that become ready while a write is under way
wait for it to end, then go together in one database step: one hop, one transaction, their
rollups summed. Requests that end at once (streams of one length, a burst) then cost one
commit instead of one each, and the database thread is free sooner for the admissions
queued behind them. Alone, a row goes at once, as it always did.

With the counters in Redis, the slots the rows' requests held are then given back and the
rows' tokens added to the copies of the spending that admission reads
(gateway/spending_copy.py), one script for the batch, before the writers hear their rows are
written: a request that starts after another has ended sees its tokens and its slot free.
With the counters in the database the slots go back in the rows' own transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref

from accounts.db_on_loop import LoopStepFailed, on_loop_database, run_together_on_loop
from accounts.db_thread import calls_in_flight, run_db_step, run_in_db_thread, step_here
from gateway import spending_copy, usage_journal
from gateway.counters import CountersUnavailable, in_database, store
from gateway.counters_redis import RedisStore
from gateway.usage import Row, chores_after, record_rows, rows_statements

logger = logging.getLogger("gateway.row_writer")

MAX_ROWS = 100  # per transaction: a statement's parameters stay far below SQLite's limit


class _Writer:
    """The rows waiting on one event loop, and whether a write is under way there."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: list[tuple[Row, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    def add(self, row: Row) -> asyncio.Future[None]:
        written = self.loop.create_future()
        self.waiting.append((row, written))
        if self.task is None:
            self.task = self.loop.create_task(self._write_waiting())
        return written

    async def _write_waiting(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_ROWS], self.waiting[MAX_ROWS:]
                try:
                    await _write([row for row, _written in batch])
                except BaseException as error:  # every row's writer hears of it
                    _settle(batch, error)
                    if not isinstance(error, Exception):
                        raise
                else:
                    _settle(batch, None)
        finally:
            self.task = None


async def _write(rows: list[Row]) -> None:
    written: list[Row] = []
    try:
        written = await _record(rows)
    finally:
        if not in_database():
            await _ended_in_redis(rows, written)


async def _record(rows: list[Row]) -> list[Row]:
    """The rows written: on PostgreSQL from the event loop itself (accounts/db_on_loop.py);
    on SQLite, or if that failed, the careful way, where a row the database refuses goes
    alone and rows it cannot take wait in the journal (usage.record_rows)."""
    if on_loop_database():
        try:
            await run_together_on_loop(rows_statements(rows))
        except LoopStepFailed:
            pass  # nothing written, or all: the careful way finds out which
        except asyncio.CancelledError:
            # Written or not: the journal's replay writes each row once (at shutdown, say).
            for row in rows:
                usage_journal.append(row.entry)
            raise
        else:
            chores = chores_after(rows)
            if chores is not None:
                await run_in_db_thread(chores)
            return rows
    return await run_db_step(record_rows, rows)


async def _ended_in_redis(rows: list[Row], written: list[Row]) -> None:
    """Give back the slots the rows' requests held and add the tokens of the rows written to
    the copies of the spending, in one script. If Redis cannot be reached the slots expire
    by themselves and the copies are read from the rollups again when they expire."""
    redis = store()
    assert isinstance(redis, RedisStore)
    held = [slot for row in rows for slot in row.held]
    periods, seconds = spending_copy.increments([row.entry for row in written])
    if held or periods:
        try:
            await redis.ended(held, periods, seconds)
        except CountersUnavailable:
            logger.warning("slots and spending not settled: Redis unavailable")


def _settle(batch: list[tuple[Row, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _row, written in batch:
        if written.done():
            continue
        if error is None:
            written.set_result(None)
        elif isinstance(error, asyncio.CancelledError):
            written.cancel()  # the loop is shutting down: no writer is left to hear of it
        else:
            written.set_exception(error)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = (
    weakref.WeakKeyDictionary()
)


def _writer() -> _Writer:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _Writer(loop)
    return writer


async def write_row(row: Row) -> None:
    """Write `row` (with whatever other rows are waiting); return once it is written or
    journalled. The write goes on if the caller is cancelled."""
    writer = _writer()
    if writer.task is None and calls_in_flight() == 1 and in_database():
        # The only call's row, with no step to follow it in Redis: at once on SQLite if
        # nothing waits for the loop, without a task and the two loop turns of waiting for it.
        ran, _written = step_here(functools.partial(record_rows, [row]))
        if ran:
            return
    await asyncio.shield(writer.add(row))


async def rows_written() -> None:
    """Wait until every row handed to `write_row` on this loop is written (at shutdown)."""
    writer = _writers.get(asyncio.get_running_loop())
    while writer is not None and writer.task is not None:
        await asyncio.shield(writer.task)
