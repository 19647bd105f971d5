"""PostgreSQL from the event loop itself: a request's row without the hop to a thread.

On PostgreSQL a request's row and its rollups are one simple query, which the server runs
as one implicit transaction (accounts/sql_batch.py). Sent from a database thread, that one
round trip also costs the hop there and back (two thread wake-ups, the interpreter lock
handed over twice) and Django's cursor layers: 0.49 ms of CPU per row against 0.34 from
the loop, 1.09 ms of wall time against 0.76 (2,000 rows, three alternations). Here each
event loop keeps one connection of its own, made from Django's connection parameters,
and waits for the answer as it waits for any other socket.

Only statements that are all or nothing go this way, and the caller has a careful way
for whatever fails here (accounts/db_thread.py): nothing was written, or, with the
connection lost after the server committed, the rows are there and found by their ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

from accounts.sql_batch import Statement, one_query

CONNECT_TIMEOUT = 10  # seconds, unless the database's OPTIONS set another


class LoopStepFailed(Exception):
    """The statements failed here, or may have: the caller takes the careful way."""


def on_loop_database() -> bool:
    """Whether the database is one the event loop can reach itself (PostgreSQL)."""
    return bool(connections[DEFAULT_DB_ALIAS].vendor == "postgresql")


# Each loop's own; a connection left by a loop that has closed (a test's) is closed when
# another loop opens one, or by `close_loop_connections`.
_connections: dict[asyncio.AbstractEventLoop, psycopg.AsyncConnection[Any]] = {}


async def run_together_on_loop(statements: Sequence[Statement]) -> None:
    """Run `statements` all or none in one round trip on this loop's own connection.

    Raises LoopStepFailed if they failed or the connection did (a connection that failed
    is closed; the next step opens another).
    """
    sql, params = one_query(statements)
    try:
        connection = await _connection()
        async with connection.cursor() as cursor:
            await cursor.execute(sql, params)
    except psycopg.Error as error:
        await close_loop_connection()
        raise LoopStepFailed(type(error).__name__) from error
    except BaseException:  # cancelled mid-query: the connection's state is unknown
        await close_loop_connection()
        raise


async def _connection() -> psycopg.AsyncConnection[Any]:
    loop = asyncio.get_running_loop()
    connection = _connections.get(loop)
    if connection is None or connection.closed:
        for gone in [other for other in _connections if other.is_closed()]:
            await _connections.pop(gone).close()  # closing waits for nothing on its loop
        connection = await psycopg.AsyncConnection.connect(**_parameters())
        _connections[loop] = connection
    return connection


def _parameters() -> dict[str, Any]:
    """Django's own connection parameters (OPTIONS, adapters), autocommitting, with the
    client-side binding that lets several statements go in one query, as Django's do."""
    parameters = connections[DEFAULT_DB_ALIAS].get_connection_params()
    parameters.setdefault("connect_timeout", CONNECT_TIMEOUT)
    parameters["cursor_factory"] = psycopg.AsyncClientCursor
    parameters["autocommit"] = True
    return parameters


async def close_loop_connection() -> None:
    """Close this loop's connection, if it has one (at shutdown, or once it failed)."""
    connection = _connections.pop(asyncio.get_running_loop(), None)
    if connection is not None:
        with contextlib.suppress(psycopg.Error):
            await connection.close()


def close_loop_connections() -> None:
    """Close every loop's connection, from outside any loop (at the end of the tests)."""
    while _connections:
        _loop, connection = _connections.popitem()
        asyncio.run(connection.close())
