"""How async code reaches the database: one hop to a small pool of database threads, or,
for the request path's short steps on SQLite, no hop at all.

Each thread keeps its own connection open between steps. Opening a SQLite connection (and
running its PRAGMAs) or taking one from the PostgreSQL pool cost more than most steps
themselves; Django's per-request threads under ASGI can only open and close one per hop.
The pool's threads are the only holders of these connections, so no connection is ever
held across an upstream call, and DB_THREADS bounds how many the gateway uses.

On SQLite a request's step costs less than the hop to a thread and back (two thread
wake-ups and the GIL handed over twice), so `run_db_step` runs it on the event loop's own
connection when nothing else is waiting for the loop and the step cannot wait either: the
call is the only one in flight, the database's turn is free (the lock file, taken without
waiting) and SQLite answers busy at once rather than sleeping (busy_timeout 0). Otherwise
the step goes to a database thread. With other calls in flight the thread is the faster
way for all of them: SQLite's own work there runs beside the loop, which goes on relaying
the other calls' bytes (measured: 16 paced streams started 5 ms later with every step
inline, for 5 % less CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, connections

from accounts.pacing import AtMostEvery

P = ParamSpec("P")
R = TypeVar("R")

_threads: _DbThreads | None = None
_lock = threading.Lock()
_local = threading.local()  # each database thread's handle on the SQLite lock file


class _DbThreads:
    """DB_THREADS threads taking steps from one queue; each keeps its own connection.

    Leaner than a ThreadPoolExecutor behind run_in_executor: a step is one queue entry and
    one callback into the event loop, with no futures chained across threads.
    """

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"db-{number}", daemon=True)
            for number in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def stop(self, last: Callable[[], None]) -> None:
        """Run `last` once in each thread (all at once), then end the threads."""
        for _thread in self._threads:
            self._jobs.put(last)
        for _thread in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


def _pool() -> _DbThreads:
    global _threads
    if _threads is None:
        with _lock:
            if _threads is None:
                _threads = _DbThreads(settings.DB_THREADS)
    return _threads


def _forget_threads() -> None:
    global _threads, _local
    _threads = None  # a forked child has none of its parent's threads
    # Nor its turn: a lock file handle shared with the parent would be one turn-taker for two.
    _local = threading.local()


os.register_at_fork(after_in_child=_forget_threads)


def _step(fn: Callable[[], R]) -> R:
    with _sqlite_turn():
        return _step_on_connection(fn)


@contextlib.contextmanager
def _sqlite_turn() -> Iterator[None]:
    """Take turns with the other processes' database threads on one SQLite file.

    SQLite lets one writer in at a time, and a writer that finds it busy sleeps a
    millisecond or more before it looks again: with several workers those sleeps, not the
    work, set the pace. A lock file hands the turn over at once instead.
    """
    fd = _lock_fd() if connection.vendor == "sqlite" else None
    if fd is None:
        yield  # PostgreSQL; or no place for the lock file (nor the database): the step says so
        return
    with _short_switch_interval():
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


TURN_SWITCH_INTERVAL = 0.0005
_switching = threading.Lock()
_short_switches = 0  # steps waiting for or holding the file's turn
_usual_switch_interval = sys.getswitchinterval()


@contextlib.contextmanager
def _short_switch_interval() -> Iterator[None]:
    """Each statement hands the interpreter lock back to a busy event loop and waits up to a
    switch interval (5 ms) to get it again, as does the thread when its turn comes: all the
    while holding the file's turn, which the other workers' steps wait for. The interval is
    short while any step waits for or holds the turn (two workers on SQLite, 64 clients:
    449-518 req/s with the usual interval, 587-628 with this)."""
    global _short_switches, _usual_switch_interval
    with _switching:
        if _short_switches == 0:
            _usual_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(TURN_SWITCH_INTERVAL)
        _short_switches += 1
    try:
        yield
    finally:
        with _switching:
            _short_switches -= 1
            if _short_switches == 0:
                sys.setswitchinterval(_usual_switch_interval)


def _lock_fd() -> int | None:
    """This thread's own handle on the lock file: each is a separate turn-taker."""
    fd: int | None = getattr(_local, "lock_fd", None)
    if fd is None:
        try:
            path = f"{connection.settings_dict['NAME']}.lock"
            fd = _local.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
    return fd


def _step_on_connection(fn: Callable[[], R]) -> R:
    kept = connection.connection is not None
    try:
        return _run(fn)
    except DatabaseError:
        if not kept or connection.connection is not None:  # not a broken kept connection
            raise
    # The server dropped the kept connection (a restart): the step failed on it without
    # effect, so it runs once more on a new one.
    return _run(fn)


def _run(fn: Callable[[], R]) -> R:
    try:
        return fn()
    except DatabaseError:
        if connection.in_atomic_block or (
            connection.connection is not None and not connection.is_usable()
        ):
            # A broken connection must not serve the next step: the next one reconnects.
            connection.close()
        raise
    finally:
        if connection.in_atomic_block:  # a step must never leave its transaction open
            connection.close()


async def run_in_db_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking database step `fn` in one hop to a database thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()
    context = contextvars.copy_context()  # request id and the like, for log lines
    step = functools.partial(fn, *args, **kwargs)

    def job() -> None:
        if future.cancelled():
            return  # the caller left before the step began: it never runs
        try:
            outcome: tuple[R | None, BaseException | None] = (context.run(_step, step), None)
        except BaseException as error:  # handed to the caller, whatever it is
            outcome = (None, error)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it any more
            loop.call_soon_threadsafe(_settle, future, *outcome)

    _pool().submit(job)
    return await future


async def run_db_step(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a short step of the request path: at once on SQLite when nothing makes it wait,
    else in one hop to a database thread.

    For steps of a few statements only: one that may take long (a journal replay, a report)
    belongs on a thread, where it cannot hold up the event loop.
    """
    step = functools.partial(fn, *args, **kwargs)
    ran, result = step_here(step)
    if ran:
        return result  # type: ignore[return-value]  # set whenever ran is True
    return await run_in_db_thread(step)


def step_here(step: Callable[[], R]) -> tuple[bool, R | None]:
    """(True, result) if `step` could run at once on the event loop's own connection (see
    the module's docstring), else (False, None) without having run it."""
    if _calls_in_flight <= 1 and _inline_database():
        return _run_inline(step)
    return False, None


_calls_in_flight = 0


def calls_in_flight() -> int:
    return _calls_in_flight


@contextlib.contextmanager
def call_in_flight() -> Iterator[None]:
    """Count an API call for as long as it is served (its response's last byte included)."""
    global _calls_in_flight
    _calls_in_flight += 1
    try:
        yield
    finally:
        _calls_in_flight -= 1


class _Busy(BaseException):
    """SQLite is busy with another writer: the inline step stopped without effect.

    A BaseException so that no step's own `except DatabaseError` takes it for a failure:
    the transaction rolls back and the step runs again on a database thread, which waits.
    """


def _inline_database() -> bool:
    global _inline
    if _inline is None:
        settings_dict = connections.settings["default"]
        name = str(settings_dict.get("NAME") or "")
        _inline = settings_dict["ENGINE"].endswith("sqlite3") and not _in_memory(name)
    return _inline


_inline: bool | None = None


def _in_memory(name: str) -> bool:
    return name in ("", ":memory:") or "mode=memory" in name


def _run_inline(step: Callable[[], R]) -> tuple[bool, R | None]:
    """(True, result) if the step ran here, (False, None) if it would have had to wait."""
    fd = _lock_fd()
    if fd is None:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False, None  # another process's (or this one's thread's) turn
    try:
        with _loop_out_of_sight():
            _ready_inline_connection()
            with connection.execute_wrapper(_busy_stops):
                return True, _run(step)
    except _Busy:
        return False, None
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        _checkpoint_now_and_then()


@contextlib.contextmanager
def _loop_out_of_sight() -> Iterator[None]:
    """Django refuses database calls where an event loop runs, because they would block it;
    the calls made here do not wait for anything, so the loop is out of sight meanwhile."""
    loop = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)


def _ready_inline_connection() -> None:
    if connection.connection is not None:
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        # Never sleep in SQLite's busy handler; and the WAL is checkpointed by a thread
        # (_checkpoint_now_and_then), not by whichever commit crosses the threshold.
        cursor.execute("PRAGMA busy_timeout = 0")
        cursor.execute("PRAGMA wal_autocheckpoint = 0")


def _busy_stops(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
) -> Any:
    try:
        return execute(sql, params, many, context)
    except OperationalError as error:
        cause = error.__cause__
        if isinstance(cause, sqlite3.OperationalError) and cause.sqlite_errorcode in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ):
            raise _Busy() from None
        raise


_checkpoints = AtMostEvery(1.0)


def _checkpoint_now_and_then() -> None:
    """Fold the WAL back into the database file, on a thread, about once a second."""
    if _checkpoints.due("wal", time.monotonic()):
        _pool().submit(_checkpoint)


def _checkpoint() -> None:
    # Whatever goes wrong, the database thread must live on: the next one will do.
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        # PASSIVE: copies what it can without waiting for, or holding up, any writer.
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")


def close_inline_connection() -> None:
    """Close the event loop thread's own connection (at shutdown, on that thread)."""
    with _loop_out_of_sight():
        connection.close()


def _settle(future: asyncio.Future[R], result: R | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error


def close_db_threads() -> None:
    """Close the database threads' connections and stop the threads (at shutdown)."""
    global _threads
    with _lock:
        threads, _threads = _threads, None
    if threads is None:
        return
    # One closer per thread: each waits for the others, so no thread runs two.
    barrier = threading.Barrier(settings.DB_THREADS)

    def close_own() -> None:
        connections.close_all()
        barrier.wait(timeout=10)

    threads.stop(close_own)


_shared: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}


async def run_shared_in_db_thread(name: Hashable, fn: Callable[[], R]) -> R:
    """Run the read `fn` once for all its concurrent callers, who share what it returns.

    Cached settings expire for every request at once: without this, 64 requests in flight
    would each read the same key or pool, and queue behind each other doing it.
    """
    loop = asyncio.get_running_loop()
    slot = (loop, name)
    pending = _shared.get(slot)
    if pending is None:
        pending = asyncio.ensure_future(run_in_db_thread(fn))
        _shared[slot] = pending
        pending.add_done_callback(functools.partial(_forget_shared, slot))
    # Shielded: a caller that leaves must not cancel the read for the others.
    result: R = await asyncio.shield(pending)
    return result


def _forget_shared(
    slot: tuple[asyncio.AbstractEventLoop, Hashable], done: asyncio.Future[Any]
) -> None:
    _shared.pop(slot, None)
    if not done.cancelled():
        done.exception()  # retrieved here too: every caller may have left
