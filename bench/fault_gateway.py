"""The gateway's side of a fault load: set up through manage.py, then read back.

What it leaves is read from outside, as an operator would: the ledger through
`export_usage`, its log, its local journal and its process tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.testing.live_servers import Gateway

ROOT = Path(__file__).resolve().parent.parent


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env},
        input=stdin, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare(env: dict[str, str]) -> str:
    """Migrate, add a key no limit refuses and one upstream at the fake; the key."""
    manage(env, "migrate", "--noinput", "-v0")
    key = manage(
        env, "issue_key", "load", "--name", "fault-load", "--rpm", "100000000",
        "--tpm", "2000000000", "--concurrency", "100000",
        "--budget-tokens", "1000000000000", "--budget-period", "month",
    ).strip()  # fmt: skip
    upstream = ["--label", "fake-puter", "--max-concurrency", "100000"]
    manage(env, "add_upstream", *upstream, stdin="load-token")
    return key


def ledger(env: dict[str, str]) -> list[dict[str, Any]]:
    lines = manage(env, "export_usage", "--format", "jsonl").splitlines()
    return [orjson.loads(line) for line in lines if line.strip()]


def this_run(gateway: Gateway) -> str:
    """The part of the gateway's log (a file every run appends to) that this run wrote."""
    log = gateway.log_text()
    return log[max(log.rfind(f"Started parent process [{gateway.process.pid}]"), 0) :]


def waiting_in_journal(var: Path) -> int:
    """Rows the gateway's local journals still hold for the database."""
    return sum(len(p.read_bytes().splitlines()) for p in (var / "journal").glob("*/usage-*.jsonl"))


def worker_pids(master: int) -> list[int]:
    """The uvicorn workers under `master` (all are spawned before any of them serves)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
