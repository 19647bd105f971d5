"""Plain statements of the request path: several as one unit, in one round trip where the
database allows, each through the leanest cursor that keeps Django's guarantees.

PostgreSQL runs the statements of one simple query as a single implicit transaction:
a request's row and its rollups cost one round trip instead of one each plus BEGIN and
COMMIT. SQLite, in process, runs them one by one inside a transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

Statement = tuple[str, Sequence[Any]]
T = TypeVar("T", covariant=True)


class Cursor(Protocol):
    db: BaseDatabaseWrapper

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def fetchone(self) -> Any: ...


def plain_cursor() -> AbstractContextManager[Cursor]:
    """A cursor for the request path's own SQL (`%s` placeholders) on the default database.

    On SQLite Django's cursor costs ten times the statement it runs (11 µs of layers and a
    placeholder regex per execute, against about 1 µs): there the statements go to the
    driver's cursor, with Django's error translation and execute wrappers kept.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "sqlite":
        return cast("AbstractContextManager[Cursor]", db.cursor())
    db.ensure_connection()
    return _SQLiteCursor(db)


class _SQLiteCursor:
    def __init__(self, db: BaseDatabaseWrapper) -> None:
        self.db = db
        self._cursor = db.connection.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        qmarks = _qmarks(sql)
        if not self.db.execute_wrappers:
            return self._execute(qmarks, params, False, None)
        executor: Any = self._execute
        for wrapper in reversed(self.db.execute_wrappers):
            executor = functools.partial(wrapper, executor)
        return executor(qmarks, params, False, {"connection": self.db, "cursor": self})

    def _execute(self, sql: str, params: Sequence[Any], many: bool, context: object) -> Any:
        with self.db.wrap_database_errors:
            return self._cursor.execute(sql, params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def __enter__(self) -> _SQLiteCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


@functools.cache
def _qmarks(sql: str) -> str:
    """`%s` placeholders as SQLite's `?`: the module's statements hold no other `%`."""
    return sql.replace("%s", "?")


def run_together(statements: Sequence[Statement]) -> None:
    """Run `statements` all or none (inside the caller's transaction, if there is one)."""
    db = connections[DEFAULT_DB_ALIAS]  # looked up once, not on every use of the proxy
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(*one_query(statements))
        return
    with transaction.atomic(savepoint=False), plain_cursor() as cursor:
        for statement, values in statements:
            cursor.execute(statement, values)


def one_query(statements: Sequence[Statement]) -> tuple[str, list[Any]]:
    """`statements` as one PostgreSQL query; its parameters are bound on the client (as
    Django's cursors and accounts/db_on_loop.py do), so one execute may hold several."""
    sql = ";\n".join(statement for statement, _ in statements)
    return sql, [value for _, values in statements for value in values]


class Reads:
    """Scalar subqueries gathered from several modules, read in one SELECT.

    Each `add` returns where its value will be in the row, so every module can find its own
    answers after a single statement.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._params: list[Any] = []

    def add(self, subquery: str, params: Sequence[Any]) -> int:
        self._parts.append(subquery)
        self._params.extend(params)
        return len(self._parts) - 1

    def values(self) -> list[Any]:
        if not self._parts:
            return []
        sql = "SELECT " + ", ".join(f"({part})" for part in self._parts)
        with plain_cursor() as cursor:
            cursor.execute(sql, self._params)
            return list(cursor.fetchone())


class Question(Protocol[T]):
    """What a module added to `Reads`, and how it reads its answer from the row."""

    def answer(self, values: list[Any]) -> T: ...


def read_alone(ask: Callable[[Reads], Question[T]]) -> T:
    """One question's subqueries in a SELECT of their own."""
    reads = Reads()
    question = ask(reads)
    return question.answer(reads.values())
