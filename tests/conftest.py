"""Live fixtures: the fake Puter and the gateway under uvicorn, talking real HTTP on loopback."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from accounts.keys import KeyLimits, issue_key
from gateway.models import Upstream
from gateway.testing.fake_openai import FakeOpenAI
from gateway.testing.fake_puter import FakePuter

BASE_DIR = Path(__file__).resolve().parent.parent
LOG_DIR = Path(settings.VAR_DIR) / "test-logs"
# Redis keys of this run's gateways: never shared with another run or worker.
REDIS_PREFIX = f"test-{secrets.token_hex(4)}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# Every API key and upstream token the suite creates: none may ever reach a log line.
ISSUED_SECRETS: list[str] = []


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Fake:
    app: FakePuter
    url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_fake/stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset")


@contextmanager
def serve_in_thread(app: Any, name: str) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yield its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
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


@pytest.fixture(scope="session")
def fake_server() -> Iterator[Fake]:
    app = FakePuter()
    with serve_in_thread(app, "fake Puter") as url:
        yield Fake(app, url)


@pytest.fixture
def fake(fake_server: Fake) -> Fake:
    fake_server.reset()
    return fake_server


@dataclass
class OpenAIFake:
    app: FakeOpenAI
    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_fake/stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset")


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[OpenAIFake]:
    app = FakeOpenAI()
    with serve_in_thread(app, "fake OpenAI-compatible server") as url:
        yield OpenAIFake(app, url)


@pytest.fixture
def fake_openai(fake_openai_server: OpenAIFake) -> OpenAIFake:
    fake_openai_server.reset()
    return fake_openai_server


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


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


def start_gateway(fake_url: str, name: str, *, workers: int = 1, **env: str) -> Gateway:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"gateway-{name}-{_worker()}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PUTER_API_BASE": fake_url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "TOKEN_ENCRYPTION_KEY": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
        # Tests change keys and upstreams between calls: read them fresh every time.
        "SETTINGS_CACHE_SECONDS": "0",
        "UPSTREAM_READ_TIMEOUT": "5",
        "LOG_FORMAT": "json",
        "REDIS_KEY_PREFIX": REDIS_PREFIX,
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
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", log_path, process)
    _wait_until_up(gateway)
    return gateway


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


@pytest.fixture(scope="session")
def gateway(django_db_setup: None, django_db_blocker: Any, fake_server: Fake) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "main")
    yield server
    server.process.terminate()
    server.process.wait(10)
    log = server.log_text()
    leaked = [secret[:11] for secret in ISSUED_SECRETS if secret in log]
    assert not leaked, f"secrets in the gateway log: {leaked}"


# --- the cast --------------------------------------------------------------------------


@pytest.fixture
def make_key(transactional_db: None) -> Callable[..., str]:
    def make(username: str = "alice", **limits: Any) -> str:
        user, _ = User.objects.get_or_create(username=username)
        _key, raw = issue_key(user=user, name=f"{username}-test", limits=KeyLimits(**limits))
        ISSUED_SECRETS.append(raw)
        return raw

    return make


@pytest.fixture
def alice_key(make_key: Callable[..., str]) -> str:
    return make_key("alice")


@pytest.fixture
def make_upstream(transactional_db: None) -> Callable[..., Upstream]:
    def make(label: str = "puter-main", token: str = "ok-main-token", **fields: Any) -> Upstream:
        upstream = Upstream(label=label, **fields)
        upstream.token = token
        upstream.save()
        if len(token) >= 12:  # a two-letter test token turns up inside any random text
            ISSUED_SECRETS.append(token)
        return upstream

    return make


@pytest.fixture
def upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    return make_upstream()
