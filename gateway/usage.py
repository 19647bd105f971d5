"""Metering in memory while a request runs, and its one ledger row at the end."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.utils import timezone

from accounts.db_thread import run_in_db_thread
from accounts.models import ApiKey, UsageLog, UsageStatus
from accounts.pacing import AtMostEvery
from accounts.rollups import finished_at, rollup_statements
from accounts.sql_batch import Statement, run_together
from gateway import ids, usage_journal
from gateway.counters import in_database
from gateway.counters_db import release_statement
from gateway.limits import Grant
from gateway.models import Upstream
from gateway.pool import Lease
from gateway.providers.base import Usage
from gateway.tokens import count_messages, count_text

logger = logging.getLogger("gateway.usage")

# A key's last_used_at and an upstream's last_ok_at are hints for people, not counters:
# each is written at most once a minute.
_key_used_notes = AtMostEvery(60.0)
_upstream_ok_notes = AtMostEvery(60.0)


@dataclass(slots=True)
class UsageMeter:
    """What one request used, counted as it streams; nothing here touches the database."""

    request_id: str
    key_id: int
    user_id: int
    key_prefix: str
    endpoint: str
    model: str
    stream: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    created: dt.datetime = field(default_factory=timezone.now)
    first_token_at: float | None = None
    upstream_id: int | None = None
    upstream_label: str = ""
    upstream_model: str = ""
    reported: Usage | None = None
    delivered: list[str] = field(default_factory=list)
    recorded: bool = False
    grant: Grant | None = None  # limits held while the request runs
    lease: Lease | None = None  # the upstream account's slot, once the call has answered

    def add_delivered(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.delivered.append(text)

    def usage(self, *, complete: bool) -> tuple[Usage, bool]:
        """(usage, estimated): the upstream's figure for a complete answer, else counted."""
        if self.reported is not None and complete:
            return self.reported, False
        prompt = (
            self.reported.prompt_tokens
            if self.reported is not None
            else count_messages(self.messages)
        )
        completion = count_text("".join(self.delivered))
        cents = self.reported.usd_cents if self.reported is not None else None
        return Usage(prompt, completion, cents), True

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return int((self.first_token_at - self.started) * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: UsageStatus
    http_status: int
    usage: Usage
    estimated: bool = False
    error: str = ""


def no_usage() -> Usage:
    return Usage(0, 0)


@dataclass(frozen=True, slots=True)
class Row:
    """A finished request's ledger row, and the shared slots (scope, holder) its request held.

    With the counters in the database the slots go back in the row's own transaction; in
    Redis the row writer gives them back once the row is written (gateway/row_writer.py).
    """

    entry: dict[str, Any]
    key_prefix: str
    held: Sequence[tuple[str, str]] = ()

    def holders_in_database(self) -> list[str]:
        return [holder for _scope, holder in self.held] if in_database() else []


def usage_row(meter: UsageMeter, outcome: Outcome, *, held: Sequence[tuple[str, str]] = ()) -> Row:
    """The row of `meter`'s request, as it stands now (its latency ends here)."""
    return Row(ledger_entry(meter, outcome), meter.key_prefix, tuple(held))


def record_rows(rows: Sequence[Row]) -> list[Row]:
    """Write the rows and their rollups in one transaction, or journal them if the database
    fails; the rows written. Each row's slots held in the database's counters go back in
    it too.

    Rows that cannot go together (one names an upstream deleted meanwhile) go one by one.
    """
    left = list(rows)
    written: list[Row] = []
    try:
        if len(left) > 1 and _written_together(left):
            written, left = left, []
        while left:
            if _write_alone(left[0]):
                written.append(left[0])
            left.pop(0)
    except (OperationalError, InterfaceError):
        # The database is away: keep the rows not written locally until it returns.
        for row in left:
            usage_journal.append(row.entry)
            logger.warning(
                "database unavailable: usage row journalled", extra={"key": row.key_prefix}
            )
        return written
    chores = chores_after(written)
    if chores is not None:
        chores()
    return written


def rows_statements(rows: Sequence[Row]) -> list[Statement]:
    """What writes fresh `rows` with their rollups, all or none, and gives back the slots
    their requests held in the database's counters."""
    holders = [holder for row in rows for holder in row.holders_in_database()]
    return _statements([_fields(row.entry) for row in rows], holders)


def chores_after(written: Sequence[Row]) -> Callable[[], None] | None:
    """What is due once `written` are: the hints for people (each at most once a minute)
    and the replay of journalled rows. None when nothing is, as after most writes."""
    now = time.monotonic()
    upstreams = {
        row.entry["upstream_id"]
        for row in written
        if row.entry["status"] == UsageStatus.OK
        and row.entry["upstream_id"] is not None
        and _upstream_ok_notes.due(row.entry["upstream_id"], now)
    }
    keys = {row.entry["key_id"] for row in written if _key_used_notes.due(row.entry["key_id"], now)}
    replay = usage_journal.pending()
    if not (upstreams or keys or replay):
        return None
    return functools.partial(_do_chores, sorted(upstreams), sorted(keys), replay=replay)


def _do_chores(upstreams: list[int], keys: list[int], *, replay: bool) -> None:
    """The chores; a database that fails here fails none of the rows already written: the
    hints wait for their next minute, journalled rows for the next replay."""
    moment = timezone.now()
    try:
        if upstreams:
            Upstream.objects.filter(pk__in=upstreams).update(last_ok_at=moment)
        if keys:
            ApiKey.objects.filter(pk__in=keys).update(last_used_at=moment)
        if replay:
            usage_journal.replay(write_entry)
    except DatabaseError:
        logger.warning("hints and journal replay put off: database unavailable")


def _write_alone(row: Row) -> bool:
    """One row, the careful way; whether it was written. One the database refuses for what
    it holds is logged, and the rows written with it still go; a database that is away
    stops them all."""
    try:
        return write_entry(row.entry, fresh=True, release=row.holders_in_database())
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        logger.exception("usage row not written", extra={"key": row.key_prefix})
        return False


def _written_together(rows: Sequence[Row]) -> bool:
    """All the rows in one transaction; False if the database refused one of them."""
    try:
        _insert(rows_statements(rows))
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        return False  # nothing was written
    return True


JOURNAL_REPLAY_EVERY = 5.0  # seconds


async def replay_journal_forever() -> None:
    """Replay journalled rows every few seconds: they must not wait for the next request."""
    while True:
        await asyncio.sleep(JOURNAL_REPLAY_EVERY)
        try:
            await run_in_db_thread(_replay_if_pending)
        except DatabaseError:
            continue  # still away; the rows wait in the journal


def _replay_if_pending() -> None:
    if usage_journal.pending():
        usage_journal.replay(write_entry)


def replay_journal() -> int:
    """Write journalled rows left by this or an earlier process (at start-up)."""
    try:
        return usage_journal.replay(write_entry)
    finally:
        connection.close()


def ledger_entry(meter: UsageMeter, outcome: Outcome) -> dict[str, Any]:
    """The row as plain values, so it can wait in the journal."""
    usage = outcome.usage
    return {
        "entry_id": str(ids.uuid4()),
        "created": meter.created.isoformat(),
        "request_id": meter.request_id,
        "key_id": meter.key_id,
        "user_id": meter.user_id,
        "endpoint": meter.endpoint,
        "model": storable(meter.model, 200),
        "upstream_model": storable(meter.upstream_model, 200),
        "upstream_id": meter.upstream_id,
        "stream": meter.stream,
        "status": str(outcome.status),
        "http_status": outcome.http_status,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "usage_estimated": outcome.estimated,
        "usd_cents": usage.usd_cents,
        "latency_ms": meter.elapsed_ms(),
        "ttft_ms": meter.ttft_ms(),
        "error": storable(outcome.error, 300),
    }


def storable(text: str, limit: int) -> str:
    """Client-chosen text as PostgreSQL stores it: within its column, NUL turned to U+FFFD.

    A refused body's model name is any string the client sent; PostgreSQL refuses both NUL
    and text past a column's length, and a row it refuses would never be written.
    """
    return text.replace("\x00", "\ufffd")[:limit]


def write_entry(entry: dict[str, Any], *, fresh: bool = False, release: Sequence[str] = ()) -> bool:
    """Insert the row and count it in its rollups in one transaction, once per entry id.

    A fresh row (metered just now, not replayed) skips the checks a replayed one needs; if
    its upstream was deleted meanwhile the insert fails and the careful path runs. The
    slots of `release` (counters in the database) are given back in the same transaction.
    """
    fields = _fields(entry)
    if fresh:
        try:
            _insert(_statements([fields], release))  # all or nothing, one round trip
            return True
        except IntegrityError:
            pass
    with transaction.atomic():
        if UsageLog.objects.filter(entry_id=entry["entry_id"]).exists():
            return False
        upstream = fields["upstream_id"]
        if upstream and not Upstream.objects.filter(pk=upstream).exists():
            fields["upstream_id"] = None  # deleted while the row waited
        _insert(_statements([fields], release))
    return True


def _fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "created": dt.datetime.fromisoformat(entry["created"])}


def _insert(statements: Sequence[Statement]) -> None:
    """Where every ledger row goes in, the careful way: all or none."""
    run_together(statements)


def _statements(rows: Sequence[dict[str, Any]], release: Sequence[str]) -> list[Statement]:
    finished = [(row, finished_at(row["created"], row["latency_ms"])) for row in rows]
    statements = [_rows_statement(rows), *rollup_statements(finished)]
    if release:
        statements.append(release_statement(sorted(release)))
    return statements


_ROW_FIELDS = [field for field in UsageLog._meta.concrete_fields if not field.primary_key]


@functools.cache
def _insert_rows(count: int) -> str:
    """INSERT of `count` ledger rows (only the model's own table and column names are in)."""
    one = "({})".format(", ".join(["%s"] * len(_ROW_FIELDS)))
    return "INSERT INTO {} ({}) VALUES {}".format(  # noqa: S608
        UsageLog._meta.db_table,
        ", ".join(str(field.column) for field in _ROW_FIELDS),
        ", ".join([one] * count),
    )


def _rows_statement(rows: Sequence[dict[str, Any]]) -> Statement:
    """The ledger rows as one plain INSERT: the ORM's save cost more than the statement.

    Values go through each field's own conversion for the database, as save() does.
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each use of the `connection` proxy looks it up
    values = [
        field.get_db_prep_save(
            fields[field.attname] if field.attname in fields else field.get_default(), db
        )
        for fields in rows
        for field in _ROW_FIELDS
    ]
    return _insert_rows(len(rows)), values
