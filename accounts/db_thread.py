"""The one way async code reaches the database: one hop to a small pool of database threads.

Each thread keeps its own connection open between steps. Opening a SQLite connection (and
running its PRAGMAs) or taking one from the PostgreSQL pool cost more than most steps
themselves; Django's per-request threads under ASGI can only open and close one per hop.
The pool's threads are the only holders of these connections, so no connection is ever
held across an upstream call, and DB_THREADS bounds how many the gateway uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, connections

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_local = threading.local()  # each database thread's handle on the SQLite lock file


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(settings.DB_THREADS, thread_name_prefix="db")
    return _executor


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
    if connection.vendor != "sqlite":
        yield
        return
    fd = getattr(_local, "lock_fd", None)
    if fd is None:
        try:
            path = f"{connection.settings_dict['NAME']}.lock"
            fd = _local.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # no place for it (nor, then, for the database): the step reports that
            return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


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
    context = contextvars.copy_context()  # request id and the like, for log lines
    step = functools.partial(fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool(), context.run, _step, step)


def close_db_threads() -> None:
    """Close the database threads' connections and stop the threads (at shutdown)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is None:
        return
    # One closer per thread: each waits for the others, so no thread runs two.
    barrier = threading.Barrier(settings.DB_THREADS)

    def close_own() -> None:
        connections.close_all()
        barrier.wait(timeout=10)

    closers = [executor.submit(close_own) for _ in range(settings.DB_THREADS)]
    for closer in closers:
        closer.result()
    executor.shutdown(wait=True)


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
