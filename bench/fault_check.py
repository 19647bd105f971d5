"""What each call of the fault load must leave: its client's reply and one ledger row."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from bench.fault_calls import Call, Received
from gateway.testing.fake_scenarios import chunk_texts

DATABASE_CODES = frozenset({"database_unavailable", "limits_unavailable"})
Window = tuple[float, float]  # time.monotonic() when the database was stopping, when back
SCENARIO_ROWS = {
    "ok": ("ok", 200),
    "fault_before": ("upstream_error", 502),
    "fault_after": ("upstream_error", 200),
    "disconnect": ("client_disconnected", 200),
}


@dataclass(frozen=True)
class Check:
    """What the comparison needs besides the calls: when the database was away, keyless ids."""

    outage: Window | None
    keyless: frozenset[str]


def database_refusal(received: Received) -> bool:
    return received.status == 503 and received.code in DATABASE_CODES


Expected = tuple[str | None, int, int]  # status (None: any), http status, rows


def expected(call: Call, received: Received, keyless: frozenset[str]) -> Expected:
    """What the ledger must hold for this call.

    A call refused for the database's absence has a row like any other (the journal keeps
    it), except when its key could not be looked up: no key, nothing to charge, as a 401.
    """
    if database_refusal(received):
        if received.code == "limits_unavailable":
            return "rejected", 503, 1
        return None, 503, int(call.request_id not in keyless)
    status, http_status = SCENARIO_ROWS[call.kind]
    return status, http_status, 1


def client_problems(call: Call, received: Received, outage: Window | None) -> list[str]:
    """Where the client did not get what its scenario promises."""
    if database_refusal(received):
        # After a restart a pooled connection that died with the server may still fail once.
        after_stop = outage is not None and received.span[1] >= outage[0]
        return [] if after_stop else ["refused for the database before it was stopped"]
    want = chunk_texts(call.chunks)
    if not call.stream:
        want = ["".join(want)] if want else []
    problems = [] if received.texts == want else [f"got {received.texts}, not {want}"]
    if call.kind == "ok" and (received.usage, received.done) != (call.chunks, True):
        problems.append(f"usage {received.usage}, done {received.done}: not {call.chunks}, True")
    if call.kind == "fault_after" and not received.code:
        problems.append("no error event after the first byte")
    return problems


def compare(
    calls: list[Call], results: dict[str, Received], rows: list[dict[str, Any]], check: Check
) -> list[str]:
    """Every mismatch between what the clients received and the ledger's rows."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_id[row["request_id"]].append(row)
    mismatches: list[str] = []
    for call in calls:
        received = results[call.request_id]
        status, http_status, count = expected(call, received, check.keyless)
        found = by_id.pop(call.request_id, [])
        problems = client_problems(call, received, check.outage)
        if len(found) != count:
            problems.append(f"{len(found)} rows, not {count} (client saw {received.reply})")
        tokens = 0 if database_refusal(received) else received.tokens
        for row in found[:1]:
            seen = (row["status"], row["http_status"], row["completion_tokens"])
            if seen != (status or row["status"], http_status, tokens):
                problems.append(f"row {seen}, not {(status, http_status, tokens)}")
        mismatches += [f"{call.request_id} ({call.model}): {p}" for p in problems]
    mismatches += [f"{rid}: {len(extra)} rows of no request sent" for rid, extra in by_id.items()]
    return mismatches


def row_counts(calls: list[Call], rows: list[dict[str, Any]]) -> Counter[str]:
    """Requests without a row, with more than one, and rows of no request."""
    per_id = Counter(row["request_id"] for row in rows)
    counts: Counter[str] = Counter()
    for call in calls:
        found = per_id.pop(call.request_id, 0)
        if found != 1:
            counts["doubled" if found else "missing"] += 1
    counts["foreign"] = sum(per_id.values())
    return counts


def keyless_refusals(log: str, tag: str) -> frozenset[str]:
    """Request ids the gateway logged without a key: refused before the key was known."""
    found: set[str] = set()
    for line in log.splitlines():
        if f'"fl-{tag}-' in line and '"message":"request"' in line:
            entry = orjson.loads(line)
            if entry.get("key") is None:
                found.add(entry["request_id"])
    return frozenset(found)
