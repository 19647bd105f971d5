"""The ledger as CSV or JSON lines: `export_usage`, the portal's and the overview's downloads.

One object (or CSV row) per ledger row, with the field names of UsageLog plus `key_prefix` and
`username`, `created` in ISO 8601 UTC (DESIGN.md section 8). The ledger is large: rows are
streamed, never loaded whole.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.db.models import QuerySet

from accounts.db_thread import run_in_db_thread
from accounts.models import UsageLog

FORMATS = ("csv", "jsonl")
# Rows per database round trip; bounded memory whatever the ledger's size.
BATCH = 2000

_MODEL_FIELDS = list(UsageLog._meta.concrete_fields)
FIELD_NAMES = [field.name for field in _MODEL_FIELDS] + ["key_prefix", "username"]
_COLUMNS = [field.attname for field in _MODEL_FIELDS] + ["key__prefix", "user__username"]


@dataclass(frozen=True, slots=True)
class ExportFilter:
    since: dt.date | None = None
    user_id: int | None = None
    key_id: int | None = None
    # Inclusive last day, for the portal's date range; the command has none.
    until: dt.date | None = None


def ledger_rows(selection: ExportFilter) -> QuerySet[UsageLog, tuple[Any, ...]]:
    """The ledger rows selected, as tuples in FIELD_NAMES order, oldest row first."""
    rows = UsageLog.objects.all()
    if selection.since is not None:
        rows = rows.filter(created__gte=_midnight(selection.since))
    if selection.until is not None:
        rows = rows.filter(created__lt=_midnight(selection.until + dt.timedelta(days=1)))
    if selection.user_id is not None:
        rows = rows.filter(user_id=selection.user_id)
    if selection.key_id is not None:
        rows = rows.filter(key_id=selection.key_id)
    return rows.order_by("id").values_list(*_COLUMNS)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value


def _csv_cell(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else _plain(value)


def header(fmt: str) -> bytes:
    return _csv_bytes([FIELD_NAMES]) if fmt == "csv" else b""


def encode(rows: Iterable[tuple[Any, ...]], fmt: str) -> bytes:
    """Rows as CSV lines or JSON lines, ready to write."""
    if fmt == "csv":
        return _csv_bytes([[_csv_cell(value) for value in row] for row in rows])
    return b"".join(
        orjson.dumps({name: _plain(value) for name, value in zip(FIELD_NAMES, row, strict=True)})
        + b"\n"
        for row in rows
    )


def _csv_bytes(lines: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue().encode()


def export_chunks(selection: ExportFilter, fmt: str) -> Iterator[bytes]:
    """The whole export, streamed from one database cursor (`.iterator()`)."""
    yield header(fmt)
    batch: list[tuple[Any, ...]] = []
    for row in ledger_rows(selection).iterator(chunk_size=BATCH):
        batch.append(row)
        if len(batch) == BATCH:
            yield encode(batch, fmt)
            batch = []
    if batch:
        yield encode(batch, fmt)


def _page(selection: ExportFilter, fmt: str, after_id: int) -> tuple[bytes, int | None]:
    """One batch of rows after `after_id`, encoded; the last id (column 0), None at the end."""
    rows = list(ledger_rows(selection).filter(id__gt=after_id)[:BATCH])
    if not rows:
        return b"", None
    return encode(rows, fmt), rows[-1][0]


async def export_stream(selection: ExportFilter, fmt: str) -> AsyncIterator[bytes]:
    """The export for an HTTP response: one short database step per batch, by id ranges.

    Each step hands its connection back, so a slow download holds none between batches.
    """
    yield header(fmt)
    after: int | None = 0
    while after is not None:
        chunk, after = await run_in_db_thread(_page, selection, fmt, after)
        if chunk:
            yield chunk
