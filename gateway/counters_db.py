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
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper

from accounts.db_thread import run_in_db_thread
from accounts.sql_batch import Statement
from gateway.counters import (
    SLOT_TTL,
    Answer,
    Ask,
    CountersUnavailable,
    OneStepStore,
    SlotAsk,
    Window,
)
from gateway.models import Hit, Slot

P = ParamSpec("P")
R = TypeVar("R")

SLOTS = Slot._meta.db_table
HITS = Hit._meta.db_table
SLICES = 60  # rows per window


def _lock(cursor: CursorWrapper, scope: str) -> None:
    if cursor.db.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(scope.encode())])


def admit_here(ask: Ask, now: float) -> Answer:
    """Take what `ask` asks for in the caller's transaction (database thread)."""
    if ask.slot is not None and not _has_room(ask.slot, now):
        return Answer(slot_taken=False, window=None, extra_taken=False)
    window = None
    if ask.window is not None:
        window = hit_here(ask.window.scope, ask.window.limit, ask.window.window, now)
        if not window.admitted:
            return Answer(slot_taken=True, window=window, extra_taken=False)
    if ask.slot is not None:
        _insert_slot(ask.slot, now)
    extra = False
    if ask.extra is not None and _has_room(ask.extra, now):
        _insert_slot(ask.extra, now)
        extra = True
    return Answer(slot_taken=True, window=window, extra_taken=extra)


def _has_room(slot: SlotAsk, now: float) -> bool:
    with connection.cursor() as cursor:
        _lock(cursor, slot.scope)
        if _sweep_due(slot.scope, now):
            cursor.execute(
                f"DELETE FROM {SLOTS} WHERE scope = %s AND expires_at <= %s", [slot.scope, now]
            )
        cursor.execute(
            f"SELECT COUNT(*) FROM {SLOTS} WHERE scope = %s AND expires_at > %s",
            [slot.scope, now],
        )
        return bool(cursor.fetchone()[0] < slot.limit)


# Expired rows are left out of every count, so deleting them is only housekeeping: once a
# second per scope and process, not on every admission.
SWEEP_EVERY = 1.0
_swept: dict[str, float] = {}


def _sweep_due(scope: str, now: float) -> bool:
    if now - _swept.get(scope, -SWEEP_EVERY) < SWEEP_EVERY:
        return False
    if len(_swept) > 10_000:
        _swept.clear()
    _swept[scope] = now
    return True


def _insert_slot(slot: SlotAsk, now: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SLOTS} (scope, holder, expires_at) VALUES (%s, %s, %s)",
            [slot.scope, slot.holder, now + SLOT_TTL],
        )


def hit_here(scope: str, limit: int, window: float, now: float) -> Window:
    """Count a hit in the caller's transaction (database thread), if the window has room."""
    size = window / SLICES
    start = math.floor(now / size) * size
    with connection.cursor() as cursor:
        _lock(cursor, scope)
        if _sweep_due(HITS + scope, now):
            cursor.execute(
                f"DELETE FROM {HITS} WHERE scope = %s AND at <= %s", [scope, now - window]
            )
        cursor.execute(
            f"SELECT COALESCE(SUM(hits), 0), MIN(at) FROM {HITS} WHERE scope = %s AND at > %s",
            [scope, now - window],
        )
        count, oldest = cursor.fetchone()
        admitted = count < limit
        if admitted:
            cursor.execute(
                f"INSERT INTO {HITS} (scope, at, hits) VALUES (%s, %s, 1) "
                f"ON CONFLICT (scope, at) DO UPDATE SET hits = {HITS}.hits + 1",
                [scope, start],
            )
            count += 1
            oldest = start if oldest is None else oldest
    reset = oldest + window - now if oldest is not None else 0.0
    return Window(admitted, int(count), max(reset, 0.0))


def release_statement(holders: Sequence[str]) -> Statement:
    """What gives slots back, to run with the statements of the request's row."""
    marks = ", ".join(["%s"] * len(holders))
    return f"DELETE FROM {SLOTS} WHERE holder IN ({marks})", list(holders)


def release_slots_here(holders: Sequence[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(*release_statement(holders))


def _admit(ask: Ask, now: float) -> Answer:
    with transaction.atomic():
        return admit_here(ask, now)


def _renew(holders: dict[str, str], until: float) -> None:
    marks = ", ".join(["%s"] * len(holders))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SLOTS} SET expires_at = %s WHERE holder IN ({marks})",
            [until, *holders],
        )


def _count(scope: str, now: float) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {SLOTS} WHERE scope = %s AND expires_at > %s",
            [scope, now],
        )
        return int(cursor.fetchone()[0])


async def _run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return await run_in_db_thread(fn, *args, **kwargs)
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
