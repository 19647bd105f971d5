"""Shared counters for limits: concurrency slots and rolling windows.

With REDIS_URL they live in Redis (atomic Lua scripts), so every worker of every machine
sees them; without it in the database, so every worker of this machine does. A slot
expires unless its process renews it, so a crash never holds a limit for ever. When the
store cannot be reached the counters raise `CountersUnavailable`: limits fail closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from gateway.ids import hex_id

SLOT_TTL = 60.0  # seconds a slot lives without renewal
RENEW_EVERY = 15.0


class CountersUnavailable(Exception):
    """The shared store did not answer."""


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling window after a hit was tried: was it admitted, and how full is it."""

    admitted: bool
    count: int  # hits in the window, this one included when admitted
    reset_after: float  # seconds until the oldest hit leaves the window


@dataclass(frozen=True, slots=True)
class SlotAsk:
    scope: str
    limit: int
    holder: str


@dataclass(frozen=True, slots=True)
class WindowAsk:
    scope: str
    limit: int
    window: float = 60.0


@dataclass(frozen=True, slots=True)
class SpentAsk:
    """The copies of a key's token spending to read with its counters (Redis only).

    Each is a scope name, or None when the key's limits do not need it: tokens of the
    key's and of its user's budget period, and the key's tokens per second, summed over
    the seconds after `since_second`.
    """

    key_period: str | None
    user_period: str | None
    minute: str | None
    since_second: int


@dataclass(frozen=True, slots=True)
class Spent:
    """The copies read; None where one was asked for but is not there (to be seeded)."""

    key_period: int | None
    user_period: int | None
    minute: int | None
    oldest_second: int | None  # the earliest second of the minute's tokens


@dataclass(frozen=True, slots=True)
class Ask:
    """What one admission takes from the counters, all in one step.

    The slot first (if full, nothing else happens), then the window (if full, the slot is
    not kept), then, if both passed, the extra slot when its scope has room. `spent` is
    read in the same step where the store keeps a copy of the spending (Redis); with the
    counters in the database admission reads the rollups in its own transaction instead.
    """

    slot: SlotAsk | None = None
    window: WindowAsk | None = None
    extra: SlotAsk | None = None
    spent: SpentAsk | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    slot_taken: bool  # the slot had room (also True when none was asked for)
    window: Window | None
    extra_taken: bool
    spent: Spent | None = None

    @property
    def holds_slot(self) -> bool:
        """Whether the slot asked for is now held (the window did not refuse it)."""
        return self.slot_taken and (self.window is None or self.window.admitted)


class CounterStore(Protocol):
    async def admit(self, ask: Ask, now: float) -> Answer: ...

    async def release_slots(self, held: list[tuple[str, str]]) -> None: ...

    async def take_slot(self, scope: str, limit: int, holder: str, now: float) -> bool: ...

    async def release_slot(self, scope: str, holder: str) -> None: ...

    async def renew_slots(self, holders: dict[str, str], until: float) -> None: ...

    async def count_slots(self, scope: str, now: float) -> int: ...

    async def hit(self, scope: str, limit: int, window: float, now: float) -> Window: ...

    async def peek(self, scope: str, window: float, now: float) -> Window: ...


class OneStepStore:
    """A slot, a hit or a look at a window: each the one-part ask it is."""

    async def admit(self, ask: Ask, now: float) -> Answer:
        raise NotImplementedError

    async def release_slots(self, held: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    async def take_slot(self, scope: str, limit: int, holder: str, now: float) -> bool:
        return (await self.admit(Ask(slot=SlotAsk(scope, limit, holder)), now)).slot_taken

    async def release_slot(self, scope: str, holder: str) -> None:
        await self.release_slots([(scope, holder)])

    async def hit(self, scope: str, limit: int, window: float, now: float) -> Window:
        answer = await self.admit(Ask(window=WindowAsk(scope, limit, window)), now)
        assert answer.window is not None
        return answer.window

    async def peek(self, scope: str, window: float, now: float) -> Window:
        return await self.hit(scope, 0, window, now)  # a limit of zero only counts


_store: CounterStore | None = None
_held: dict[str, str] = {}  # holder → scope, for renewal
_renewer: asyncio.Task[None] | None = None


def store() -> CounterStore:
    global _store
    if _store is None:
        if settings.REDIS_URL:
            from gateway.counters_redis import RedisStore

            _store = RedisStore(settings.REDIS_URL, settings.REDIS_KEY_PREFIX)
        else:
            from gateway.counters_db import DatabaseStore

            _store = DatabaseStore()
    return _store


def in_database() -> bool:
    """Whether the counters live in the database (no REDIS_URL)."""
    return not settings.REDIS_URL


def new_holder() -> str:
    return hex_id(12)


async def take_slot(scope: str, limit: int) -> str | None:
    """A slot of `scope` if fewer than `limit` are held; its holder id, or None."""
    holder = new_holder()
    if not await store().take_slot(scope, limit, holder, time.time()):
        return None
    keep_alive(scope, holder)
    return holder


def keep_alive(scope: str, holder: str) -> None:
    """Renew a slot this process took until it is released."""
    _held[holder] = scope
    _ensure_renewer()


def forget(holder: str) -> None:
    """Stop renewing a slot (released, or left to expire)."""
    _held.pop(holder, None)


async def release_slot(scope: str, holder: str) -> None:
    forget(holder)
    await store().release_slot(scope, holder)


async def admit(ask: Ask) -> Answer:
    """Take what `ask` asks for in one step; taken slots are renewed until released."""
    answer = await store().admit(ask, time.time())
    keep_taken_alive(ask, answer)
    return answer


def keep_taken_alive(ask: Ask, answer: Answer) -> None:
    for slot, taken in ((ask.slot, answer.holds_slot), (ask.extra, answer.extra_taken)):
        if slot is not None and taken:
            keep_alive(slot.scope, slot.holder)


async def release_slots(held: list[tuple[str, str]]) -> None:
    """Give back several (scope, holder) slots in one step."""
    for _scope, holder in held:
        forget(holder)
    if held:
        await store().release_slots(held)


async def give_back(held: list[tuple[str, str]]) -> None:
    """`release_slots`, or, if the store cannot be reached, leave them to expire by themselves."""
    with contextlib.suppress(CountersUnavailable):
        await release_slots(held)


async def hit(scope: str, limit: int, window: float = 60.0) -> Window:
    return await store().hit(scope, limit, window, time.time())


async def peek(scope: str, window: float = 60.0) -> Window:
    return await store().peek(scope, window, time.time())


def _ensure_renewer() -> None:
    global _renewer
    if _renewer is None or _renewer.done():
        _renewer = asyncio.get_running_loop().create_task(_renew_forever())


async def _renew_forever() -> None:
    # Keep this process's slots alive while it holds them; a dead process stops renewing.
    while _held:
        await asyncio.sleep(RENEW_EVERY)
        try:
            await store().renew_slots(dict(_held), time.time() + SLOT_TTL)
        except CountersUnavailable:
            continue
