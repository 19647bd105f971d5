"""Live servers on loopback: an ASGI app in a thread, the gateway under uvicorn in a process.

The test suite and the load scripts in bench/ both talk real HTTP to these. The gateway's
database, secret keys and Redis prefix are the caller's to pass: this module reads no
settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_answers() -> bool:
    """Whether the machine's Redis answers on 127.0.0.1:6379 (tests of it skip otherwise)."""
    try:
        socket.create_connection(("127.0.0.1", 6379), 0.5).close()
    except OSError:
        return False
    return True


def redis_url() -> str:
    """The Redis the tests use: REDIS_URL's, else the machine's own."""
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@contextmanager
def serve_in_thread(app: Any, name: str, http: Any = "auto") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yield its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, f"the {name} did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


@dataclass
class Gateway:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(
    fake_url: str, name: str, *, log_dir: Path, workers: int = 1, **env: str
) -> Gateway:
    """Start the gateway against the fake Puter at `fake_url` and wait until it answers.

    `env` overrides this process's environment for the gateway: pass DATABASE_URL,
    DJANGO_SECRET_KEY, TOKEN_ENCRYPTION_KEY and REDIS_KEY_PREFIX to keep it apart from any
    other gateway. Its output is appended to `log_dir`/gateway-`name`-<pytest worker>.log.
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"gateway-{name}-{_worker()}.log"
    environment = {
        **os.environ,
        "PUTER_API_BASE": fake_url,
        # Tests change keys and upstreams between calls: read them fresh every time.
        "SETTINGS_CACHE_SECONDS": "0",
        "UPSTREAM_READ_TIMEOUT": "5",
        "LOG_FORMAT": "json",
        # No background probes: tests see upstream states change only through their calls.
        "UPSTREAM_PROBE_INTERVAL": "0",
        # Every test calls from 127.0.0.1, and 401s are what many assert: the failed-auth
        # limit has its own tests (tests/test_security.py), on addresses of their own.
        "AUTH_FAILURES_PER_MINUTE": "100000",
        **env,
    }
    command = [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--workers", str(workers),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        # The command is built here from sys.executable and fixed arguments, nothing else.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=BASE_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", log_path, process)
    _wait_until_up(gateway)
    return gateway


def _worker() -> str:
    # Parallel pytest workers start gateways of the same name: give each its own log.
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _wait_until_up(gateway: Gateway) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert gateway.process.poll() is None, gateway.log_text()[-3000:]
        try:
            httpx.get(gateway.v1 + "/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not start:\n" + gateway.log_text()[-3000:])
