"""SIGTERM: streams in flight finish and their rows are written before the process exits."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.testing.fake_scenarios import expected_text
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def doomed_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "sigterm")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(10)


def test_a_stream_in_flight_finishes_after_sigterm_and_leaves_its_row(
    doomed_gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    body = {
        "model": "gpt-4o-mini+pace100+chunks10",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    texts: list[str] = []
    with httpx.stream(
        "POST", doomed_gateway.v1 + "/chat/completions", json=body,
        headers={"Authorization": f"Bearer {alice_key}"}, timeout=20,
    ) as reply:  # fmt: skip
        lines = reply.iter_lines()
        for line in lines:
            if '"content":"Hello "' in line:
                doomed_gateway.process.send_signal(signal.SIGTERM)
                break
        rest = list(lines)
    events = [line[6:] for line in rest if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        delta = orjson.loads(event)["choices"]
        if delta and delta[0]["delta"].get("content"):
            texts.append(delta[0]["delta"]["content"])
    assert "Hello " + "".join(texts) == expected_text(10)
    # Uvicorn re-raises the signal once its graceful shutdown is over.
    assert doomed_gateway.process.wait(15) == -signal.SIGTERM
    row = UsageLog.objects.get()
    assert (row.status, row.completion_tokens) == (UsageStatus.OK, 10)
