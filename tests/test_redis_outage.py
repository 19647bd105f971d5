"""Redis gone mid-run: limited keys fail closed with 503, nothing crashes, service returns."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.models import UsageLog, UsageStatus
from tests.conftest import Fake, Gateway, free_port, start_gateway

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class PrivateRedis:
    """A redis-server of the test's own, so stopping it disturbs nothing else."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@pytest.fixture
def redis_and_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake, tmp_path: Path
) -> Iterator[tuple[PrivateRedis, Gateway]]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    with django_db_blocker.unblock():
        gateway = start_gateway(fake_server.url, "outage", workers=2, REDIS_URL=redis.url)
    yield redis, gateway
    gateway.process.terminate()
    gateway.process.wait(10)
    redis.stop()


@pytest.mark.usefixtures("upstream", "fake")
def test_limits_fail_closed_while_redis_is_gone_and_recover_when_it_returns(
    redis_and_gateway: tuple[PrivateRedis, Gateway], make_key: Callable[..., str]
) -> None:
    redis, gateway = redis_and_gateway
    limited, free = make_key("lily", rpm=1000, max_concurrency=5), make_key("fred")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    def call(key: str) -> httpx.Response:
        return httpx.post(
            gateway.v1 + "/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}, timeout=10,
        )  # fmt: skip

    assert call(limited).status_code == 200
    redis.stop()
    during = [call(limited) for _ in range(5)]
    assert {reply.status_code for reply in during} == {503}
    assert {reply.json()["error"]["code"] for reply in during} == {"limits_unavailable"}
    assert all(reply.headers["retry-after"] == "1" for reply in during)
    assert call(free).status_code == 200  # keys without limits need no counters
    redis.start()
    deadline = time.monotonic() + 10
    recovering: list[httpx.Response] = []  # a loaded machine may refuse one or two more
    while (reply := call(limited)).status_code != 200:
        recovering.append(reply)
        assert time.monotonic() < deadline, "service did not come back"
        time.sleep(0.2)
    assert {reply.status_code for reply in recovering} <= {503}
    assert gateway.process.poll() is None
    # Exactly one row for each refused call.
    refused = UsageLog.objects.filter(status=UsageStatus.REJECTED, http_status=503)
    assert refused.count() == len(during) + len(recovering)
