"""Several plain statements run as one unit, in one round trip where the database allows.

PostgreSQL runs the statements of one simple query as a single implicit transaction:
a request's row and its rollups cost one round trip instead of one each plus BEGIN and
COMMIT. SQLite, in process, runs them one by one inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

Statement = tuple[str, Sequence[Any]]


def run_together(statements: Sequence[Statement]) -> None:
    """Run `statements` all or none (inside the caller's transaction, if there is one)."""
    db = connections[DEFAULT_DB_ALIAS]  # looked up once, not on every use of the proxy
    if db.vendor == "postgresql":
        # Django binds parameters on the client here, so one execute may hold several.
        sql = ";\n".join(statement for statement, _ in statements)
        params = [value for _, values in statements for value in values]
        with db.cursor() as cursor:
            cursor.execute(sql, params)
        return
    with transaction.atomic(savepoint=False), db.cursor() as cursor:
        for statement, values in statements:
            cursor.execute(statement, values)


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
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(sql, self._params)
            return list(cursor.fetchone())
