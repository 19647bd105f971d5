"""Shared reads: one database step serves every concurrent caller of the same name."""

from __future__ import annotations

import asyncio
import threading
import time

from django.conf import settings

from accounts.db_thread import run_in_db_thread, run_shared_in_db_thread


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
