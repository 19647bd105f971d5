"""Time the usage page and the operator's overview over a million ledger rows.

`make bench-dashboards` (or `python -m bench.dashboards`) seeds a separate SQLite database
(var/bench/dashboards.sqlite3; BENCH_DATABASE_URL names another, which is wiped) with users,
keys, 1,000,000 ledger rows over 90 days and their daily rollup computed from the same rows,
then serves it with uvicorn and times each page over real HTTP. It prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DB = BASE_DIR / "var" / "bench" / "dashboards.sqlite3"
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{DEFAULT_DB}"
os.environ["DATABASE_URL"] = DATABASE_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Each import from here on needs the environment above, or Django set up (hence E402).
import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from accounts.keys import digest_key  # noqa: E402
from accounts.models import ApiKey, UsageDaily, UsageLog  # noqa: E402

MODELS = ["gpt-4o-mini", "gpt-5-nano", "claude-sonnet-4-5", "gemini-2.5-flash", "deepseek-chat"]
# (status, http status, share): mostly answers, some failures and refusals.
OUTCOMES = [
    ("ok", 200, 0.93),
    ("client_disconnected", 200, 0.02),
    ("upstream_error", 502, 0.03),
    ("rejected", 429, 0.015),
    ("invalid_request", 400, 0.005),
]
FAILED = {"upstream_error", "invalid_request"}
DAYS = 90
INSERT_BATCH = 50_000


def _reset_database() -> None:
    if DATABASE_URL.startswith("sqlite:///"):
        path = Path(DATABASE_URL.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        call_command("migrate", verbosity=0)
    else:
        call_command("migrate", verbosity=0)
        call_command("flush", interactive=False, verbosity=0)


def _fast_writes() -> None:
    """Seeding only: a throwaway database need not survive a crash mid-insert."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-262144")


def _people(users: int, keys_per_user: int) -> list[ApiKey]:
    people = [User(username=f"user{n:04d}", password="!") for n in range(users)]
    User.objects.bulk_create(people)
    people = list(User.objects.order_by("id"))
    keys = [
        ApiKey(
            user=person,
            name=f"key{k}",
            prefix=f"sk-b{n:04d}{k:03d}",
            digest=digest_key(f"bench-{n}-{k}"),
        )
        for n, person in enumerate(people)
        for k in range(keys_per_user)
    ]
    ApiKey.objects.bulk_create(keys)
    return list(ApiKey.objects.order_by("id"))


def _ledger(keys: list[ApiKey], rows: int, today: dt.date) -> Iterator[tuple[Any, ...]]:
    """Ledger rows as tuples in `_LEDGER_COLUMNS` order; a few keys are much busier."""
    rng = random.Random(7)  # noqa: S311 - benchmark data, not secrets
    weights = [1 / (rank + 1) for rank in range(len(keys))]
    chosen = rng.choices(keys, weights=weights, k=rows)
    start = dt.datetime.combine(today - dt.timedelta(days=DAYS - 1), dt.time(), tzinfo=dt.UTC)
    # In time order, as a ledger grows: ids follow `created`.
    moments = sorted(rng.randrange(DAYS * 86_400) for _ in range(rows))
    statuses = rng.choices(OUTCOMES, weights=[share for *_rest, share in OUTCOMES], k=rows)
    models = rng.choices(MODELS, weights=[5, 3, 2, 1, 1], k=rows)
    for number, (key, outcome, model) in enumerate(zip(chosen, statuses, models, strict=True)):
        status, http_status, _share = outcome
        prompt = 0 if status in {"rejected", "invalid_request"} else rng.randint(20, 900)
        answered = status in {"ok", "client_disconnected"}
        completion = rng.randint(5, 700) if answered else 0
        created = start + dt.timedelta(seconds=moments[number])
        yield (
            created,
            f"req_bench{number:08d}",
            key.pk,
            key.user_id,
            "chat.completions",
            model,
            status,
            http_status,
            prompt,
            completion,
            prompt + completion,
            rng.randint(80, 4000),
        )


_LEDGER_COLUMNS = (
    "created",
    "request_id",
    "key_id",
    "user_id",
    "endpoint",
    "model",
    "status",
    "http_status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
)


def _insert_ledger(
    rows: Iterator[tuple[Any, ...]],
) -> dict[tuple[int, int, str, dt.date], list[int]]:
    """Bulk-insert the ledger; the rollup of exactly those rows, as record_rows keeps it."""
    table = UsageLog._meta.db_table
    extra = ", upstream_model, stream, usage_estimated, error, entry_id"
    columns = ", ".join(_LEDGER_COLUMNS) + extra
    marks = ", ".join(["%s"] * (len(_LEDGER_COLUMNS) + 5))
    entry_field = UsageLog._meta.get_field("entry_id")
    ids = random.Random(11)  # noqa: S311 - benchmark data, not secrets
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - fixed names
    rollup: dict[tuple[int, int, str, dt.date], list[int]] = defaultdict(lambda: [0] * 6)
    batch: list[tuple[Any, ...]] = []
    with transaction.atomic(), connection.cursor() as cursor:
        for row in rows:
            created, _rid, key_id, user_id, _endpoint, model, status = row[:7]
            tally = rollup[(key_id, user_id, model, created.date())]
            tally[0] += 1
            tally[1] += row[8]
            tally[2] += row[9]
            tally[3] += row[10]
            tally[4] += status in FAILED
            tally[5] += status == "rejected"
            entry = uuid.UUID(int=ids.getrandbits(128), version=4)
            entry_id = entry_field.get_db_prep_value(entry, connection)
            batch.append((*row, model, True, status != "ok", "", entry_id))
            if len(batch) == INSERT_BATCH:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
    return rollup


def _insert_rollup(rollup: dict[tuple[int, int, str, dt.date], list[int]]) -> int:
    daily = [
        UsageDaily(
            key_id=key_id,
            user_id=user_id,
            model=model,
            day=day,
            requests=t[0],
            prompt_tokens=t[1],
            completion_tokens=t[2],
            total_tokens=t[3],
            errors=t[4],
            rejected=t[5],
        )
        # Day by day, as the gateway creates them: a day's first request of a key and model.
        for (key_id, user_id, model, day), t in sorted(rollup.items(), key=lambda kv: kv[0][3])
    ]
    UsageDaily.objects.bulk_create(daily, batch_size=5000)
    return len(daily)


def seed(*, rows: int, users: int, keys_per_user: int) -> dict[str, Any]:
    started = time.perf_counter()
    _reset_database()
    _fast_writes()
    keys = _people(users, keys_per_user)
    today = dt.datetime.now(dt.UTC).date()
    rollup = _insert_ledger(_ledger(keys, rows, today))
    daily = _insert_rollup(rollup)
    root = User.objects.create(username="root", is_staff=True, is_superuser=True, password="!")
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {
        "seconds": time.perf_counter() - started,
        "ledger": UsageLog.objects.count(),
        "daily": daily,
        "busiest": keys[0].user,
        "root": root,
        "today": today,
    }


def session_cookie(user: User) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    assert session.session_key is not None
    return session.session_key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--port", str(port)]
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DJANGO_SECRET_KEY": settings.SECRET_KEY}
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"],
        cwd=BASE_DIR,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the server did not start")


def time_page(client: httpx.Client, path: str, runs: int) -> dict[str, float]:
    reply = client.get(path)  # warm: templates, connections, the catalogue of URLs
    assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        reply = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200
    times.sort()
    return {
        "median": statistics.median(times),
        "p95": times[max(0, round(0.95 * len(times)) - 1)],
        "max": times[-1],
    }


def pages(seeded: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(who, label, path) of every page timed."""
    today = seeded["today"]
    since = f"start={(today - dt.timedelta(days=DAYS - 1)).isoformat()}&end={today.isoformat()}"
    busiest = seeded["busiest"].username
    return [
        ("user", "/usage/ (last 30 days)", "/usage/"),
        ("user", f"/usage/ (all {DAYS} days)", f"/usage/?{since}"),
        ("user", "/ (home)", "/"),
        ("operator", "/admin/overview/ (last 30 days)", "/admin/overview/"),
        ("operator", f"/admin/overview/ (all {DAYS} days)", f"/admin/overview/?{since}"),
        ("operator", "/admin/overview/ (one user)", f"/admin/overview/?user={busiest}"),
    ]


def report(seeded: dict[str, Any], runs: int) -> int:
    process, url = serve()
    cookies = {
        "user": session_cookie(seeded["busiest"]),
        "operator": session_cookie(seeded["root"]),
    }
    worst = 0.0
    try:
        print(f"\n{'page':<36} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
        for who, label, path in pages(seeded):
            jar = {settings.SESSION_COOKIE_NAME: cookies[who]}
            with httpx.Client(base_url=url, cookies=jar, timeout=30) as client:
                figures = time_page(client, path, runs)
            worst = max(worst, figures["p95"])
            median, p95, most = figures["median"], figures["p95"], figures["max"]
            print(f"{label:<36} {median:>10.1f} {p95:>8.1f} {most:>8.1f}")
    finally:
        process.terminate()
        process.wait(10)
    verdict = "under" if worst < 300 else "OVER"
    print(f"\nslowest p95: {worst:.1f} ms, {verdict} the 300 ms target")
    return 0 if worst < 300 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--keys-per-user", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="time the last run's database")
    args = parser.parse_args()
    if args.reuse:
        seeded = reuse()
    else:
        print(f"seeding {args.rows:,} ledger rows into {connection.settings_dict['NAME']} …")
        seeded = seed(rows=args.rows, users=args.users, keys_per_user=args.keys_per_user)
        print(f"seeded in {seeded['seconds']:.1f} s")
    keys = ApiKey.objects.count()
    print(
        f"{seeded['ledger']:,} ledger rows, {seeded['daily']:,} daily rollup rows, "
        f"{User.objects.count() - 1} users, {keys} keys, {DAYS} days"
    )
    return report(seeded, args.runs)


def reuse() -> dict[str, Any]:
    first_key = ApiKey.objects.order_by("id").select_related("user").first()
    if first_key is None:
        raise SystemExit("nothing to reuse: run without --reuse first")
    return {
        "ledger": UsageLog.objects.count(),
        "daily": UsageDaily.objects.count(),
        "busiest": first_key.user,
        "root": User.objects.get(username="root"),
        "today": dt.datetime.now(dt.UTC).date(),
    }


if __name__ == "__main__":
    sys.exit(main())
