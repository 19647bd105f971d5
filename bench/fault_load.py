"""Load with injected faults: every request leaves exactly one usage row with its client's tokens.

`python -m bench.fault_load --requests 10000 --concurrency 32 [--database sqlite|postgres]
[--workers 2] [--stop-database-at 0.4]` serves the fake Puter and the gateway on loopback
against a fresh database of its own (a SQLite file, or a private PostgreSQL cluster), sends
a seeded mix of chat calls (normal ones, upstream faults before and after the first byte,
clients that leave mid-stream), reads the ledger with `export_usage` and compares it with
what each client received. `--stop-database-at` stops the cluster after that share of the
replies, keeps sending while it is down and starts it again. Exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from django.conf import settings

from bench.fault_calls import Call, Received, plan_calls, send
from bench.fault_check import Check, Window, compare, database_refusal, keyless_refusals, row_counts
from bench.fault_gateway import ledger, manage, prepare, this_run, waiting_in_journal, worker_pids
from bench.private_postgres import Database, open_database
from gateway.testing.fake_puter import FakePuter
from gateway.testing.live_servers import Gateway, serve_in_thread, start_gateway

# While the database is down each sender waits this long between calls, so the outage
# takes some seconds of traffic, not the rest of the run in a burst of fast refusals.
OUTAGE_PAUSE = 0.5


@dataclass
class Outage:
    """Stop the database after `stop_after` replies, keep it down, start it again."""

    database: Database
    stop_after: int
    seconds: float
    replies: int = 0
    down: bool = False
    due: asyncio.Event = field(default_factory=asyncio.Event)
    window: Window = (0.0, 0.0)
    timeline: list[str] = field(default_factory=list)

    def note_reply(self) -> None:
        self.replies += 1
        if self.replies >= self.stop_after:
            self.due.set()

    async def run(self) -> None:
        started = time.monotonic()
        await self.due.wait()
        self.down, stopping = True, time.monotonic()
        await asyncio.to_thread(self.database.stop)
        self.timeline.append(f"database stopped at {time.monotonic() - started:.1f} s")
        await asyncio.sleep(self.seconds)
        await asyncio.to_thread(self.database.start)
        self.down, self.window = False, (stopping, time.monotonic())
        self.timeline.append(f"database started again at {time.monotonic() - started:.1f} s")


async def drive(
    base_url: str, key: str, calls: list[Call], concurrency: int, outage: Outage | None
) -> dict[str, Received]:
    """Send every call, `concurrency` at a time; what each client received, by request id."""
    pending = iter(calls)
    results: dict[str, Received] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=auth, limits=limits, timeout=60) as c:

        async def sender() -> None:
            for call in pending:
                down = outage is not None and outage.down
                if down:
                    await asyncio.sleep(OUTAGE_PAUSE)
                sent = time.monotonic()
                results[call.request_id] = received = await send(c, call)
                received.while_down, received.span = down, (sent, time.monotonic())
                if outage is not None:
                    outage.note_reply()

        jobs = [sender() for _ in range(concurrency)]
        if outage is not None:
            jobs.append(outage.run())
        await asyncio.gather(*jobs)
    return results


@dataclass(frozen=True)
class Options:
    requests: int = 10_000
    concurrency: int = 32
    database: str = "sqlite"
    workers: int = 2
    stop_database_at: float | None = None
    down_seconds: float = 6.0
    redis_url: str = ""
    seed: int = 9


@dataclass
class Report:
    seconds: float
    rows: int
    counts: Counter[str]  # requests missing their row or with more than one, foreign rows
    replies: Counter[str]
    mismatches: list[str]
    workers: tuple[list[int], list[int]]  # at the start, at the end
    journalled: int  # rows the gateway kept in its journal while the database was away
    left_in_journal: int  # when the load ended; written by a replay before the comparison
    keyless: int  # refused before their key was known: no key to charge, no row due
    late: int  # refused for the database though sent after it was back
    timeline: list[str]

    @property
    def restarted(self) -> bool:
        return self.workers[0] != self.workers[1]

    def summary(self, o: Options) -> str:
        down = f", database stopped at {o.stop_database_at:.0%}" if o.stop_database_at else ""
        pids = f"worker pids {self.workers[0]} at start, {self.workers[1]} at end"
        return "\n".join(
            [
                f"fault load: {o.requests} requests, c={o.concurrency}, {o.workers} workers, "
                f"{o.database}{down}: {self.seconds:.1f} s ({o.requests / self.seconds:.0f}/s)",
                *self.timeline,
                *(f"  {count:6d}  {reply}" for reply, count in sorted(self.replies.items())),
                f"rows: {self.rows}; requests without one: {self.counts['missing']} (of which "
                f"{self.keyless} refused before their key was known: none due), with more than "
                f"one: {self.counts['doubled']}; rows of no request: {self.counts['foreign']}",
                f"rows journalled while the database was away: {self.journalled}, of which "
                f"left in the journal when the load ended: {self.left_in_journal}; calls sent "
                f"after it was back and still refused for it: {self.late}",
                f"mismatches: {len(self.mismatches)}",
                pids + (": RESTARTED" if self.restarted else ": none restarted"),
                *self.mismatches[:30],
            ]
        )


def gateway_env(var: Path, database: Database, options: Options) -> dict[str, str]:
    return {
        "VAR_DIR": str(var),
        "DATABASE_URL": database.url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "REDIS_URL": options.redis_url,
        "REDIS_KEY_PREFIX": f"fault-load-{secrets.token_hex(4)}",
        # The production default: a key's facts outlive a short database outage.
        "SETTINGS_CACHE_SECONDS": "5",
        # Injected faults belong to single requests, not to the account: never cool it.
        "UPSTREAM_FAILURES_TO_COOL": "1000000",
        # A leaving client's upstream is silent until it goes; under load that may take a while.
        "UPSTREAM_READ_TIMEOUT": "30",
    }


def run(options: Options, *, fake_url: str) -> Report:
    """The whole load, in a private VAR_DIR and a fresh database of its own."""
    with (
        tempfile.TemporaryDirectory(prefix="fault-load-") as var,
        open_database(options.database, Path(var)) as database,
    ):
        env = gateway_env(Path(var), database, options)
        key = prepare(env)
        # Its log goes beside the suite's gateway logs, which outlive the run's VAR_DIR.
        logs = Path(settings.VAR_DIR) / "test-logs"
        gateway = start_gateway(
            fake_url, "fault-load", log_dir=logs, workers=options.workers, **env
        )
        try:
            return _measure(options, env, key, gateway, database)
        finally:
            gateway.process.terminate()
            gateway.process.wait(30)


def _measure(
    options: Options, env: dict[str, str], key: str, gateway: Gateway, database: Database
) -> Report:
    tag = secrets.token_hex(3)
    calls = plan_calls(options.requests, options.seed, tag)
    outage = None
    if options.stop_database_at is not None:
        stop_after = int(options.requests * options.stop_database_at)
        outage = Outage(database, stop_after, options.down_seconds)
    before, started = worker_pids(gateway.process.pid), time.monotonic()
    results = asyncio.run(drive(gateway.url, key, calls, options.concurrency, outage))
    seconds, after = time.monotonic() - started, worker_pids(gateway.process.pid)
    left = waiting_in_journal(Path(env["VAR_DIR"]))
    if left:
        # Workers replay only after their next write: with the load over, replay it here.
        manage(env, "shell", "-c", "from gateway.usage import replay_journal; replay_journal()")
    rows = ledger(env)
    replies = Counter(r.reply for r in results.values())
    replies.update(f"{r.reply} (sent while down)" for r in results.values() if r.while_down)
    log = this_run(gateway)
    keyless = keyless_refusals(log, tag)
    journalled = log.count('"message":"database unavailable: usage row journalled"')
    window = outage.window if outage is not None else None
    mismatches = compare(calls, results, rows, Check(window, keyless))
    timeline = outage.timeline if outage is not None else []
    workers = (before, after)
    counts = row_counts(calls, rows)
    late = sum(database_refusal(r) and r.span[0] > window[1] for r in results.values() if window)
    return Report(
        seconds, len(rows), counts, replies, mismatches, workers, journalled, left, len(keyless),
        late, timeline,
    )  # fmt: skip


def main() -> None:
    # Only to find VAR_DIR for the gateway's log: the bench itself runs no Django.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stop-database-at", type=float, help="share of the replies, e.g. 0.4")
    parser.add_argument("--down-seconds", type=float, default=6.0)
    parser.add_argument("--redis-url", default="", help="shared counters in Redis")
    parser.add_argument("--seed", type=int, default=9)
    options = Options(**vars(parser.parse_args()))
    if options.stop_database_at is not None and options.database != "postgres":
        parser.error("--stop-database-at needs --database postgres")
    with serve_in_thread(FakePuter(fast=True), "fake Puter") as fake_url:
        report = run(options, fake_url=fake_url)
    print(report.summary(options), flush=True)
    sys.exit(1 if report.mismatches or report.restarted else 0)


if __name__ == "__main__":
    main()
