"""An upstream that goes silent: 504 before the first byte, an error event after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.testing.fake_scenarios import chunk_texts
from gateway.tokens import count_text
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def impatient_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "impatient", UPSTREAM_READ_TIMEOUT="0.5")
    yield server
    server.process.terminate()
    server.process.wait(10)


def post(gateway: Gateway, key: str, model: str, *, stream: bool) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


@pytest.mark.parametrize("stream", [True, False])
def test_silence_before_the_first_byte_is_504_upstream_timeout(
    impatient_gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream, stream: bool
) -> None:
    reply = post(impatient_gateway, alice_key, "gpt-4o-mini+delay3000", stream=stream)
    assert reply.status_code == 504
    assert reply.json()["error"] == {
        "message": "The upstream did not answer in time.",
        "type": "api_error",
        "param": None,
        "code": "upstream_timeout",
    }
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 504)


def test_silence_mid_stream_ends_with_an_upstream_timeout_event(
    impatient_gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = post(impatient_gateway, alice_key, "gpt-4o-mini+hangafter3+chunks6", stream=True)
    assert reply.status_code == 200
    events = [
        orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")
    ]
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert contents == chunk_texts(6)[:3]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "[DONE]" not in reply.text
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.UPSTREAM_ERROR
    assert row.completion_tokens == count_text("".join(chunk_texts(6)[:3]))
