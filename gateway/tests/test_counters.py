"""The shared counters, on the database and (when it answers) on Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import pytest
import redis.asyncio
import redis.utils

from gateway.counters import SLOT_TTL, CounterStore
from gateway.counters_db import DatabaseStore
from gateway.counters_redis import RedisStore, _PackedByHiredis
from gateway.models import Hit, Slot
from gateway.testing.live_servers import redis_answers, redis_url

pytestmark = pytest.mark.django_db(transaction=True)


STORES = ["database"] + (["redis"] if redis_answers() else [])


def make_store(kind: str) -> CounterStore:
    if kind == "redis":
        return RedisStore(redis_url(), f"test-{secrets.token_hex(4)}")
    return DatabaseStore()


@pytest.mark.parametrize("kind", STORES)
def test_slots_are_capped_released_and_expire(kind: str) -> None:
    store = make_store(kind)

    async def run() -> list[bool]:
        now = 1_000_000.0
        taken = [await store.take_slot("s", 2, f"h{n}", now) for n in range(3)]
        await store.release_slot("s", "h0")
        taken.append(await store.take_slot("s", 2, "h3", now + 1))
        # h1 and h3 die without renewal: after the TTL their slots are free again.
        later = now + SLOT_TTL + 2
        taken.append(await store.take_slot("s", 2, "h4", later))
        taken.append(await store.take_slot("s", 2, "h5", later))
        taken.append(await store.take_slot("s", 2, "h6", later))
        return taken

    assert asyncio.run(run()) == [True, True, False, True, True, True, False]


@pytest.mark.parametrize("kind", STORES)
def test_slots_of_several_scopes_go_back_in_one_release(kind: str) -> None:
    store = make_store(kind)

    async def run() -> list[bool]:
        now = 1_500_000.0
        assert await store.take_slot("a", 1, "ha", now)
        assert await store.take_slot("b", 1, "hb", now)
        assert await store.take_slot("c", 1, "hc", now)
        await store.release_slots([("a", "ha"), ("b", "hb")])
        return [await store.take_slot(scope, 1, f"{scope}2", now + 1) for scope in "abc"]

    assert asyncio.run(run()) == [True, True, False]


@pytest.mark.parametrize("kind", STORES)
def test_renewed_slots_outlive_their_first_ttl(kind: str) -> None:
    store = make_store(kind)

    async def run() -> bool:
        now = 2_000_000.0
        assert await store.take_slot("r", 1, "keeper", now)
        await store.renew_slots({"keeper": "r"}, now + SLOT_TTL * 3)
        return await store.take_slot("r", 1, "other", now + SLOT_TTL + 1)

    assert asyncio.run(run()) is False


@pytest.mark.parametrize("kind", STORES)
def test_windows_admit_up_to_the_limit_and_roll(kind: str) -> None:
    store = make_store(kind)

    async def run() -> list[tuple[bool, int, float]]:
        now = 3_000_000.0
        results = [await store.hit("w", 2, 60, now + n) for n in range(3)]
        results.append(await store.peek("w", 60, now + 30))
        results.append(await store.hit("w", 2, 60, now + 60.5))
        return [(w.admitted, w.count, round(w.reset_after, 1)) for w in results]

    assert asyncio.run(run()) == [
        (True, 1, 60.0),
        (True, 2, 59.0),
        (False, 2, 58.0),
        (False, 2, 30.0),
        (True, 2, 0.5),
    ]


def test_expired_slots_and_old_hits_are_swept_by_later_admissions() -> None:
    store = DatabaseStore()

    async def run() -> None:
        now = 5_000_000.0
        assert await store.take_slot("sweep", 5, "old-holder", now)
        await store.hit("sweep-rpm", 10, 60, now)
        later = now + SLOT_TTL + 5
        assert await store.take_slot("sweep", 5, "new-holder", later)
        await store.hit("sweep-rpm", 10, 60, later)

    asyncio.run(run())
    assert list(Slot.objects.filter(scope="sweep").values_list("holder", flat=True)) == [
        "new-holder"
    ]
    assert Hit.objects.filter(scope="sweep-rpm").count() == 1


@pytest.mark.skipif("redis" not in STORES, reason="Redis does not answer")
def test_redis_counters_work_on_after_redis_forgets_their_scripts() -> None:
    store = make_store("redis")

    async def run() -> list[bool]:
        now = 6_000_000.0
        first = await store.take_slot("flushed", 2, "before", now)
        admin = redis.asyncio.Redis.from_url(redis_url())
        await admin.script_flush()  # as a restart would
        await admin.aclose()
        second = await store.take_slot("flushed", 2, "after", now)
        third = await store.take_slot("flushed", 2, "one-too-many", now)
        return [first, second, third]

    assert asyncio.run(run()) == [True, True, False]


@pytest.mark.skipif("redis" not in STORES, reason="Redis does not answer")
def test_a_burst_of_redis_calls_opens_connections_without_reading_metadata_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py reads its version from package metadata for each connection it opens,
    unless told it: ~0.9 ms of the event loop's CPU per connection in a burst."""
    reads: list[str] = []
    read_version: Callable[[], str] = redis.utils.get_lib_version

    def counted_read() -> str:
        reads.append("read")
        return read_version()

    monkeypatch.setattr(redis.utils, "get_lib_version", counted_read)
    store = make_store("redis")

    async def run() -> int:
        admin = redis.asyncio.Redis.from_url(redis_url(), driver_info=None)
        before = (await admin.info("stats"))["total_connections_received"]
        now = 7_000_000.0
        await asyncio.gather(*(store.take_slot(f"burst-{n}", 1, "h", now) for n in range(20)))
        opened = (await admin.info("stats"))["total_connections_received"] - before
        await admin.aclose()
        return int(opened)

    assert asyncio.run(run()) >= 10  # the burst grew the pool (other tests may add their own)
    assert reads == []


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "f" * 40, 2, "c:key:1", "c:clé", 1764253456.123456, 0.1, 10**15, -3, b"raw"),
        ("SCRIPT LOAD", "return redis.call('TIME')"),
        (b"CLIENT SETNAME", "gateway"),
    ],
)
def test_commands_packed_by_hiredis_are_the_bytes_redis_py_would_send(
    command: tuple[object, ...],
) -> None:
    python_packed = redis.asyncio.Connection().pack_command(*command)  # type: ignore[arg-type]
    hiredis_packed = _PackedByHiredis().pack_command(*command)  # type: ignore[arg-type]
    assert b"".join(hiredis_packed) == b"".join(python_packed)
