"""Suite-wide fixtures for every app's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.db_on_loop import close_loop_connections
from accounts.db_thread import close_db_threads


@pytest.fixture(scope="session", autouse=True)
def _database_threads_closed(django_db_setup: None) -> Iterator[None]:
    """Close the database threads' and the event loops' connections before the test
    database is destroyed."""
    yield
    close_db_threads()
    close_loop_connections()
