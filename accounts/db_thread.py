"""The one way async code reaches the database: a single thread hop per step."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")


def _call_and_release(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return fn(*args, **kwargs)
    finally:
        # Hand the connection back (to the pool on PostgreSQL): a connection held until
        # the request ends would be held for a whole stream and starve the others.
        if not connection.in_atomic_block:
            connection.close()


async def run_in_db_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking database step `fn` in one hop and release its connection after."""
    return await sync_to_async(_call_and_release)(fn, *args, **kwargs)
