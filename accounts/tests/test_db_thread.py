"""Database steps: on threads, shared by concurrent readers, or inline on SQLite."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction

from accounts import db_thread
from accounts.db_thread import (
    TURN_SWITCH_INTERVAL,
    _lock_fd,
    call_in_flight,
    run_db_step,
    run_in_db_thread,
    run_shared_in_db_thread,
)
from accounts.pacing import AtMostEvery
from accounts.sql_batch import plain_cursor


class Reader:
    """A slow read that counts how often it ran."""

    def __init__(self, result: object = "facts", error: Exception | None = None) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._result, self._error = result, error

    def __call__(self) -> object:
        with self._lock:
            self.calls += 1
        time.sleep(0.05)  # long enough for every caller to arrive while it runs
        if self._error is not None:
            raise self._error
        return self._result


def test_concurrent_callers_share_one_read_and_a_later_caller_reads_again() -> None:
    read = Reader()

    async def main() -> list[object]:
        return await asyncio.gather(*(run_shared_in_db_thread("key", read) for _ in range(20)))

    assert asyncio.run(main()) == ["facts"] * 20
    assert read.calls == 1
    assert asyncio.run(main()) == ["facts"] * 20
    assert read.calls == 2


def test_reads_of_different_names_do_not_share() -> None:
    read = Reader()

    async def main() -> list[object]:
        return await asyncio.gather(*(run_shared_in_db_thread(name, read) for name in "abc"))

    assert asyncio.run(main()) == ["facts"] * 3
    assert read.calls == 3


def test_a_caller_that_leaves_does_not_cancel_the_read_of_the_others() -> None:
    read = Reader()

    async def main() -> object:
        leaving = asyncio.create_task(run_shared_in_db_thread("key", read))
        staying = asyncio.create_task(run_shared_in_db_thread("key", read))
        await asyncio.sleep(0.01)
        leaving.cancel()
        result = await staying
        assert leaving.cancelled()
        return result

    assert asyncio.run(main()) == "facts"
    assert read.calls == 1


def test_a_failed_read_reaches_every_caller_and_is_not_kept() -> None:
    failing = Reader(error=RuntimeError("database away"))

    async def main() -> list[object]:
        calls = (run_shared_in_db_thread("key", failing) for _ in range(5))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert [str(result) for result in results] == ["database away"] * 5
    assert failing.calls == 1
    assert asyncio.run(run_shared_in_db_thread("key", Reader("fresh"))) == "fresh"


def test_a_step_whose_caller_left_before_it_began_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        release.wait(5)

    def late_step() -> None:
        ran.append("late")

    async def main() -> None:
        # Every database thread is busy: the late step waits in the queue.
        blockers = [
            asyncio.create_task(run_in_db_thread(blocker)) for _ in range(settings.DB_THREADS)
        ]
        late = asyncio.create_task(run_in_db_thread(late_step))
        await asyncio.sleep(0.05)
        late.cancel()
        release.set()
        await asyncio.gather(*blockers)
        await asyncio.sleep(0.05)  # the queue has reached the late step by now
        assert late.cancelled()

    asyncio.run(main())
    assert ran == []
    assert asyncio.run(run_in_db_thread(lambda: "still serving")) == "still serving"


# --- short steps on SQLite: on the event loop's thread when nothing makes them wait ------


@pytest.fixture
def own_connection(transactional_db: None) -> Iterator[None]:
    """The main thread's connection opened afresh by the first inline step, closed after.

    Inline steps open it with busy_timeout 0: the tests that follow get a usual one again.
    """
    connection.close()
    yield
    connection.close()


def _sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("steps run inline on SQLite only")


def _group_step(name: str) -> str:
    with transaction.atomic():
        Group.objects.create(name=name)
    return threading.current_thread().name


async def _ticking_while(awaitable: Awaitable[str]) -> tuple[str, int]:
    """The awaitable's result and how often the event loop ticked while it ran."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        return await awaitable, ticks
    finally:
        ticker.cancel()


def _while_another_writer_holds_sqlite(step: Callable[[str], str], name: str) -> tuple[str, int]:
    """Run the step while a writer outside the turns (a management command) holds SQLite's
    write lock for 0.2 s; where it ran, and how often the event loop ticked meanwhile."""
    writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")

    async def main() -> tuple[str, int]:
        asyncio.get_running_loop().call_later(0.2, writer.execute, "COMMIT")
        return await _ticking_while(run_db_step(step, name))

    try:
        return asyncio.run(main())
    finally:
        writer.close()


def test_a_short_step_runs_on_the_event_loops_thread_when_nothing_waits(
    own_connection: None,
) -> None:
    _sqlite_only()
    where = asyncio.run(run_db_step(_group_step, "inline"))
    assert where == threading.current_thread().name
    assert asyncio.run(run_in_db_thread(threading.current_thread)).name.startswith("db-")
    assert list(Group.objects.values_list("name", flat=True)) == ["inline"]


def test_a_step_goes_to_a_database_thread_while_other_calls_are_in_flight(
    own_connection: None,
) -> None:
    _sqlite_only()
    with call_in_flight():
        assert asyncio.run(run_db_step(_group_step, "alone")) == threading.current_thread().name
        with call_in_flight():  # another call: SQLite's work goes beside the loop
            assert asyncio.run(run_db_step(_group_step, "together")).startswith("db-")
    assert sorted(Group.objects.values_list("name", flat=True)) == ["alone", "together"]


def test_a_step_goes_to_a_database_thread_while_another_process_has_the_turn(
    own_connection: None,
) -> None:
    _sqlite_only()
    other = os.open(f"{connection.settings_dict['NAME']}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)  # what another worker's step holds

    async def main() -> tuple[str, int]:
        asyncio.get_running_loop().call_later(0.2, fcntl.flock, other, fcntl.LOCK_UN)
        return await _ticking_while(run_db_step(_group_step, "waited"))

    try:
        where, ticks = asyncio.run(main())
    finally:
        os.close(other)
    assert where.startswith("db-")  # it waited for its turn there, not on the event loop
    assert ticks >= 10
    assert list(Group.objects.values_list("name", flat=True)) == ["waited"]


def test_a_step_waiting_for_or_holding_the_turn_has_a_short_switch_interval(
    own_connection: None,
) -> None:
    _sqlite_only()
    usual = sys.getswitchinterval()
    other = os.open(f"{connection.settings_dict['NAME']}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)  # what another worker's step holds
    seen: dict[str, float] = {}

    def step() -> None:
        seen["holding"] = sys.getswitchinterval()

    def release() -> None:
        seen["waiting"] = sys.getswitchinterval()
        fcntl.flock(other, fcntl.LOCK_UN)

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.1, release)
        with call_in_flight(), call_in_flight():
            await asyncio.gather(run_db_step(step), run_db_step(step))

    try:
        asyncio.run(main())
    finally:
        os.close(other)
    assert seen == {"waiting": TURN_SWITCH_INTERVAL, "holding": TURN_SWITCH_INTERVAL}
    assert usual > TURN_SWITCH_INTERVAL
    assert sys.getswitchinterval() == usual  # back once no step waits or holds


def test_a_busy_database_sends_the_step_to_a_thread_without_a_trace_of_the_first_try(
    own_connection: None,
) -> None:
    _sqlite_only()
    where, ticks = _while_another_writer_holds_sqlite(_group_step, "once")
    assert where.startswith("db-")
    assert ticks >= 10  # SQLite's busy handler slept on the thread, not on the event loop
    assert list(Group.objects.values_list("name", flat=True)) == ["once"]
    # The connection that found SQLite busy serves the next step as before.
    assert asyncio.run(run_db_step(_group_step, "after")) == threading.current_thread().name


def test_a_failing_inline_step_raises_and_the_next_one_runs(own_connection: None) -> None:
    _sqlite_only()
    asyncio.run(run_db_step(_group_step, "taken"))
    with pytest.raises(IntegrityError):
        asyncio.run(run_db_step(_group_step, "taken"))
    assert asyncio.run(run_db_step(_group_step, "next")) == threading.current_thread().name
    assert sorted(Group.objects.values_list("name", flat=True)) == ["next", "taken"]


def test_a_forked_child_takes_its_own_turns(own_connection: None) -> None:
    _sqlite_only()
    fd = _lock_fd()  # the parent's handle, holding the turn
    assert fd is not None
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        child = os.fork()
        if child == 0:  # the child: its turn must wait for the parent's
            code = 2  # no handle of its own
            try:
                own = _lock_fd()
                if own is not None and own != fd:
                    code = 1  # it took the turn the parent holds
                    fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    assert os.waitstatus_to_exitcode(status) == 0


def _delete_group_plainly(name: str) -> str:
    with plain_cursor() as cursor:  # autocommit: SQLite takes the write lock for it alone
        cursor.execute(f"DELETE FROM {Group._meta.db_table} WHERE name = %s", [name])
    return threading.current_thread().name


def test_a_plain_statement_that_finds_sqlite_busy_goes_to_a_thread_too(
    own_connection: None,
) -> None:
    _sqlite_only()
    Group.objects.create(name="gone")
    connection.close()  # opened afresh by the inline step
    where, ticks = _while_another_writer_holds_sqlite(_delete_group_plainly, "gone")
    assert where.startswith("db-")
    assert ticks >= 10
    assert not Group.objects.exists()


def test_the_wal_is_checkpointed_on_a_thread_never_by_an_inline_commit(
    own_connection: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sqlite_only()
    checkpointed = threading.Event()
    where: list[str] = []
    original = db_thread._checkpoint

    def watched() -> None:
        original()
        where.append(threading.current_thread().name)
        checkpointed.set()

    monkeypatch.setattr(db_thread, "_checkpoint", watched)
    monkeypatch.setattr(db_thread, "_checkpoints", AtMostEvery(0.0))  # due after every step
    asyncio.run(run_db_step(_group_step, "written"))
    assert checkpointed.wait(5)
    assert where[0].startswith("db-")
    with connection.cursor() as cursor:  # the inline connection, opened by the step
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == 0
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 0
