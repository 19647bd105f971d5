"""A local journal for ledger rows the database could not take, replayed when it returns.

Each process appends to its own file under VAR_DIR/journal, fsynced, under an exclusive
lock; any process may replay any file under the same lock. Rows carry a unique entry id, so
a replay that is cut short and run again never writes a row twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger("gateway.journal")
_CHECK_EVERY = 5.0
_last_check = -_CHECK_EVERY
_pending = False


def journal_dir() -> Path:
    """One journal per database: rows never replay into a database they were not meant for."""
    db = connection.settings_dict
    target = f"{db['ENGINE']}|{db.get('HOST')}|{db.get('PORT')}|{db['NAME']}"
    return Path(settings.VAR_DIR) / "journal" / hashlib.sha256(target.encode()).hexdigest()[:16]


def append(entry: dict[str, Any]) -> None:
    """Keep `entry` on local disk until the database takes it."""
    global _pending
    folder = journal_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"usage-{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, orjson.dumps(entry) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    _pending = True


def pending() -> bool:
    """Whether some journal may hold rows; looks at the disk at most every few seconds."""
    global _last_check, _pending
    if _pending:
        return True
    now = time.monotonic()
    if now - _last_check < _CHECK_EVERY:
        return False
    _last_check = now
    folder = journal_dir()
    _pending = folder.is_dir() and any(p.stat().st_size for p in folder.glob("usage-*.jsonl"))
    return _pending


def replay(write: Callable[[dict[str, Any]], bool]) -> int:
    """Write every journalled entry with `write` (idempotent); the number written."""
    global _pending
    written = 0
    for path in sorted(journal_dir().glob("usage-*.jsonl")):
        written += _replay_file(path, write)
    _pending = False
    return written


def _replay_file(path: Path, write: Callable[[dict[str, Any]], bool]) -> int:
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another process is replaying or appending to it
        with os.fdopen(os.dup(fd), "rb") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        written = sum(_replay_line(line, write) for line in lines)
        # Everything is in the database now: empty the file in place, appenders keep it.
        os.ftruncate(fd, 0)
        if written:
            logger.warning("replayed %d journalled usage rows from %s", written, path.name)
        return written
    except (OperationalError, InterfaceError):
        return 0  # still down: keep the file, try again later
    finally:
        os.close(fd)


def _replay_line(line: bytes, write: Callable[[dict[str, Any]], bool]) -> int:
    """Write one entry; one the database refuses for its content is set aside, not retried."""
    entry = orjson.loads(line)
    try:
        return int(write(entry))
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError as exc:
        logger.error(
            "journalled usage row refused by the database (%s); kept in rejected.jsonl",
            type(exc).__name__,
            extra={"entry_id": entry.get("entry_id")},
        )
        with (journal_dir() / "rejected.jsonl").open("ab") as rejected:
            rejected.write(line + b"\n")
        return 0
