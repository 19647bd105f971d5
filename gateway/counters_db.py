"""Counters in the database, for one machine without Redis.

Every operation runs inside a transaction: SQLite's IMMEDIATE transactions serialise
writers; on PostgreSQL an advisory lock per scope does. The statements are plain SQL: they
run on every request, and the ORM's query building cost more than the queries.

A window keeps one row per scope and sixtieth of the window (a second of a minute) with
the hits of that slice, so reading it sums at most 60 rows however many it admitted.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, transaction

from accounts.db_thread import run_db_step
from accounts.pacing import AtMostEvery
from accounts.sql_batch import Cursor, Reads, Statement, plain_cursor
from gateway.counters import (
    SLOT_TTL,
    Answer,
    Ask,
    CountersUnavailable,
    OneStepStore,
    SlotAsk,
    Window,
    WindowAsk,
)
from gateway.models import Hit, Slot

P = ParamSpec("P")
R = TypeVar("R")

SLOTS = Slot._meta.db_table
HITS = Hit._meta.db_table
SLICES = 60  # rows per window


def _lock(cursor: Cursor, scopes: Sequence[str]) -> None:
    """On PostgreSQL, hold each scope's advisory lock until the transaction ends.

    Always taken in the same (sorted) order, so two admissions can never deadlock.
    """
    if cursor.db.vendor == "postgresql" and scopes:
        ids = sorted({zlib.crc32(scope.encode()) for scope in scopes})
        calls = ", ".join(["pg_advisory_xact_lock(%s)"] * len(ids))
        cursor.execute(f"SELECT {calls}", ids)


def admit_here(ask: Ask, now: float) -> Answer:
    """Take what `ask` asks for in the caller's transaction (database thread)."""
    reads = Reads()
    question = ask_counters(reads, ask, now)
    return question.settle(reads.values())


def ask_counters(reads: Reads, ask: Ask, now: float) -> CountersQuestion:
    """Lock the ask's scopes and add what it must count to `reads`.

    Expired slots and hits past the window are left out of every count.
    """
    scopes = [part.scope for part in (ask.slot, ask.window, ask.extra) if part is not None]
    with plain_cursor() as cursor:
        _lock(cursor, scopes)
        _sweep(cursor, ask, now)
    slot_at = extra_at = window_at = None
    if ask.slot is not None:
        slot_at = reads.add(_LIVE_SLOTS, [ask.slot.scope, now])
    if ask.window is not None:
        since = now - ask.window.window
        window_at = reads.add(_HITS_SUM, [ask.window.scope, since])
        reads.add(_HITS_OLDEST, [ask.window.scope, since])
    if ask.extra is not None:
        extra_at = reads.add(_LIVE_SLOTS, [ask.extra.scope, now])
    return CountersQuestion(ask, now, slot_at, window_at, extra_at)


_LIVE_SLOTS = f"SELECT COUNT(*) FROM {SLOTS} WHERE scope = %s AND expires_at > %s"
_HITS_SUM = f"SELECT COALESCE(SUM(hits), 0) FROM {HITS} WHERE scope = %s AND at > %s"
_HITS_OLDEST = f"SELECT MIN(at) FROM {HITS} WHERE scope = %s AND at > %s"


@dataclass(frozen=True, slots=True)
class CountersQuestion:
    """Where an ask's counts are in a row of `Reads`, and what it takes once they are read."""

    ask: Ask
    now: float
    slot_at: int | None
    window_at: int | None  # then the oldest hit follows it
    extra_at: int | None

    def settle(self, values: list[Any]) -> Answer:
        """Judge the counts, then write the hit and the slots taken (database thread)."""
        ask, now = self.ask, self.now
        if ask.slot is not None and not _room(ask.slot, values, self.slot_at):
            return Answer(slot_taken=False, window=None, extra_taken=False)
        window = None
        if ask.window is not None:
            window = self._window(ask.window, values)
            if not window.admitted:
                return Answer(slot_taken=True, window=window, extra_taken=False)
        extra = ask.extra is not None and _room(ask.extra, values, self.extra_at)
        taken = [slot for slot in (ask.slot, ask.extra if extra else None) if slot is not None]
        with plain_cursor() as cursor:
            if ask.window is not None:  # admitted by its window
                _count_hit(cursor, ask.window, now)
            if taken:
                _insert_slots(cursor, taken, now)
        return Answer(slot_taken=True, window=window, extra_taken=extra)

    def _window(self, ask: WindowAsk, values: list[Any]) -> Window:
        assert self.window_at is not None
        count, oldest = int(values[self.window_at]), values[self.window_at + 1]
        admitted = count < ask.limit
        if admitted:
            count += 1
            oldest = _slice_start(ask.window, self.now) if oldest is None else oldest
        reset = oldest + ask.window - self.now if oldest is not None else 0.0
        return Window(admitted, count, max(reset, 0.0))


def _room(slot: SlotAsk, values: list[Any], at: int | None) -> bool:
    assert at is not None  # asked for with the slot
    return int(values[at]) < slot.limit


def _slice_start(window: float, now: float) -> float:
    size = window / SLICES
    return math.floor(now / size) * size


def _count_hit(cursor: Cursor, window: WindowAsk, now: float) -> None:
    cursor.execute(
        f"INSERT INTO {HITS} (scope, at, hits) VALUES (%s, %s, 1) "
        f"ON CONFLICT (scope, at) DO UPDATE SET hits = {HITS}.hits + 1",
        [window.scope, _slice_start(window.window, now)],
    )


def _insert_slots(cursor: Cursor, slots: Sequence[SlotAsk], now: float) -> None:
    rows = ", ".join(["(%s, %s, %s)"] * len(slots))
    values = [value for slot in slots for value in (slot.scope, slot.holder, now + SLOT_TTL)]
    cursor.execute(f"INSERT INTO {SLOTS} (scope, holder, expires_at) VALUES {rows}", values)


def _sweep(cursor: Cursor, ask: Ask, now: float) -> None:
    """Delete expired slots and old hits: housekeeping, once a second per scope."""
    for slot in (ask.slot, ask.extra):
        if slot is not None and _sweeps.due(slot.scope, now):
            cursor.execute(
                f"DELETE FROM {SLOTS} WHERE scope = %s AND expires_at <= %s", [slot.scope, now]
            )
    window = ask.window
    if window is not None and _sweeps.due(HITS + window.scope, now):
        cursor.execute(
            f"DELETE FROM {HITS} WHERE scope = %s AND at <= %s", [window.scope, now - window.window]
        )


# Expired rows are left out of every count, so deleting them is only housekeeping: once a
# second per scope and process, not on every admission.
_sweeps = AtMostEvery(1.0)


def release_statement(holders: Sequence[str]) -> Statement:
    """What gives slots back, to run with the statements of the request's row."""
    marks = ", ".join(["%s"] * len(holders))
    return f"DELETE FROM {SLOTS} WHERE holder IN ({marks})", list(holders)


def release_slots_here(holders: Sequence[str]) -> None:
    with plain_cursor() as cursor:
        cursor.execute(*release_statement(holders))


def _admit(ask: Ask, now: float) -> Answer:
    with transaction.atomic():
        return admit_here(ask, now)


def _renew(holders: dict[str, str], until: float) -> None:
    marks = ", ".join(["%s"] * len(holders))
    with plain_cursor() as cursor:
        cursor.execute(
            f"UPDATE {SLOTS} SET expires_at = %s WHERE holder IN ({marks})",
            [until, *holders],
        )


def _count(scope: str, now: float) -> int:
    with plain_cursor() as cursor:
        cursor.execute(_LIVE_SLOTS, [scope, now])
        return int(cursor.fetchone()[0])


async def _run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return await run_db_step(fn, *args, **kwargs)
    except DatabaseError as exc:
        raise CountersUnavailable(str(exc)) from None


class DatabaseStore(OneStepStore):
    async def admit(self, ask: Ask, now: float) -> Answer:
        return await _run(_admit, ask, now)

    async def release_slots(self, held: list[tuple[str, str]]) -> None:
        await _run(release_slots_here, [holder for _scope, holder in held])

    async def renew_slots(self, holders: dict[str, str], until: float) -> None:
        if holders:
            await _run(_renew, holders, until)

    async def count_slots(self, scope: str, now: float) -> int:
        return await _run(_count, scope, now)
