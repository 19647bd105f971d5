"""A load run's own database: a SQLite file, or a PostgreSQL cluster that it may stop."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.testing.live_servers import free_port


@dataclass(frozen=True)
class Database:
    """The run's own database; `pg_ctl` is set for a private cluster, which can stop."""

    url: str
    pg_ctl: tuple[str, ...] = ()

    def stop(self) -> None:
        subprocess.run([*self.pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run([*self.pg_ctl, "start"], check=True, capture_output=True)


def postgres_bin() -> Path | None:
    """The newest local PostgreSQL server's programs, if any are installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def open_database(kind: str, var: Path) -> Iterator[Database]:
    if kind == "sqlite":
        yield Database(f"sqlite:///{var / 'db.sqlite3'}")
    else:
        with private_cluster() as database:
            yield database


@contextmanager
def private_cluster() -> Iterator[Database]:
    """A PostgreSQL cluster of the run's own, so that stopping it disturbs nothing else."""
    programs = postgres_bin()
    if programs is None:
        raise RuntimeError("a private PostgreSQL cluster needs /usr/lib/postgresql/*/bin")
    home = Path(tempfile.mkdtemp(prefix="fault-load-pg-"))
    # initdb refuses to run as root: the cluster then belongs to the postgres account.
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if owner:
        account = pwd.getpwnam("postgres")
        os.chown(home, account.pw_uid, account.pw_gid)
    port, data = free_port(), str(home / "data")
    server = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={home}"
    pg_ctl = (*owner, str(programs / "pg_ctl"), "-D", data, "-w", "-l", str(home / "log"),
              "-o", f"{server} -c max_connections=200")  # fmt: skip
    try:
        initdb = [*owner, str(programs / "initdb"), "-D", data, "-U", "postgres", "-A", "trust"]
        subprocess.run([*initdb, "--no-sync"], check=True, capture_output=True)
        database = Database(f"postgres://postgres@127.0.0.1:{port}/postgres", pg_ctl)
        database.start()
        yield database
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
