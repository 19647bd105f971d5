"""Live fixtures: the fake Puter and the gateway under uvicorn, talking real HTTP on loopback."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from accounts.keys import KeyLimits, issue_key
from gateway.models import Upstream
from gateway.testing import live_servers
from gateway.testing.fake_openai import FakeOpenAI
from gateway.testing.fake_puter import FakePuter

# Test modules import these from here, beside the suite's own start_gateway().
from gateway.testing.live_servers import Gateway as Gateway
from gateway.testing.live_servers import free_port as free_port
from gateway.testing.live_servers import serve_in_thread as serve_in_thread

BASE_DIR = Path(__file__).resolve().parent.parent
LOG_DIR = Path(settings.VAR_DIR) / "test-logs"
# Redis keys of this run's gateways: never shared with another run or worker.
REDIS_PREFIX = f"test-{secrets.token_hex(4)}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# Every API key and upstream token the suite creates: none may ever reach a log line.
ISSUED_SECRETS: list[str] = []


@dataclass
class Fake:
    app: FakePuter
    url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_fake/stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset")


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


def start_gateway(fake_url: str, name: str, *, workers: int = 1, **env: str) -> Gateway:
    """A gateway on the test database, with the suite's secret keys and Redis prefix."""
    suite = {
        "DATABASE_URL": database_url(),
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "TOKEN_ENCRYPTION_KEY": ",".join(settings.TOKEN_ENCRYPTION_KEYS),
        "REDIS_KEY_PREFIX": REDIS_PREFIX,
    }
    return live_servers.start_gateway(
        fake_url, name, log_dir=LOG_DIR, workers=workers, **{**suite, **env}
    )


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
