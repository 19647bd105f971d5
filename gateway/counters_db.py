"""Counters in the database, for one machine without Redis.

Each operation is one transaction: SQLite's IMMEDIATE transactions serialise writers;
on PostgreSQL an advisory lock per scope does.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min

from accounts.db_thread import run_in_db_thread
from gateway.counters import SLOT_TTL, CountersUnavailable, Window
from gateway.models import Hit, Slot

P = ParamSpec("P")
R = TypeVar("R")


def _lock(scope: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(scope.encode())])


def _take_slot(scope: str, limit: int, holder: str, now: float) -> bool:
    with transaction.atomic():
        _lock(scope)
        Slot.objects.filter(scope=scope, expires_at__lte=now).delete()
        if Slot.objects.filter(scope=scope).count() >= limit:
            return False
        Slot.objects.create(scope=scope, holder=holder, expires_at=now + SLOT_TTL)
        return True


def _renew(holders: dict[str, str], until: float) -> None:
    Slot.objects.filter(holder__in=list(holders)).update(expires_at=until)


def _window(scope: str, limit: int, window: float, now: float, *, add: bool) -> Window:
    with transaction.atomic():
        _lock(scope)
        Hit.objects.filter(scope=scope, at__lte=now - window).delete()
        # Counted in the database: a high limit keeps many hits in the window.
        current = Hit.objects.filter(scope=scope).aggregate(count=Count("id"), oldest=Min("at"))
        count: int = current["count"]
        oldest: float | None = current["oldest"]
        admitted = add and count < limit
        if admitted:
            Hit.objects.create(scope=scope, at=now)
            count += 1
            oldest = now if oldest is None else oldest
        reset = oldest + window - now if oldest is not None else 0.0
        return Window(admitted, count, max(reset, 0.0))


def _release(holder: str) -> None:
    Slot.objects.filter(holder=holder).delete()


def _count(scope: str, now: float) -> int:
    return Slot.objects.filter(scope=scope, expires_at__gt=now).count()


async def _run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return await run_in_db_thread(fn, *args, **kwargs)
    except DatabaseError as exc:
        raise CountersUnavailable(str(exc)) from None


class DatabaseStore:
    async def take_slot(self, scope: str, limit: int, holder: str, now: float) -> bool:
        return await _run(_take_slot, scope, limit, holder, now)

    async def release_slot(self, scope: str, holder: str) -> None:
        await _run(_release, holder)

    async def renew_slots(self, holders: dict[str, str], until: float) -> None:
        await _run(_renew, holders, until)

    async def count_slots(self, scope: str, now: float) -> int:
        return await _run(_count, scope, now)

    async def hit(self, scope: str, limit: int, window: float, now: float) -> Window:
        return await _run(_window, scope, limit, window, now, add=True)

    async def peek(self, scope: str, window: float, now: float) -> Window:
        return await _run(_window, scope, 0, window, now, add=False)
