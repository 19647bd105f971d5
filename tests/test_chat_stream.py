"""Streams over real HTTP: incremental delivery, client disconnects, upstream failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream, UpstreamState
from gateway.testing.fake_scenarios import MID_STREAM_ERROR, chunk_texts
from gateway.tokens import count_text
from tests.conftest import Fake, Gateway, free_port

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Tell me something."}]


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": True, **extra}


def events_of(lines: list[str]) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:])
        for line in lines
        if line.startswith("data: ")
    ]


def wait_for_row(timeout: float = 5.0) -> UsageLog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = UsageLog.objects.first()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError("no usage row was written")


def test_first_chunk_reaches_the_client_before_the_fake_sends_its_second_event(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    body = chat_body("gpt-4o-mini+pace50")
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.v1 + "/chat/completions", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = reply.iter_lines()
        for line in lines:
            if '"content":"Hello "' in line:
                first_content_at = time.monotonic()
                break
        sent = list(fake.app.stats.last_stream_line_times)
        rest = list(lines)
    # The fake had sent one line when the client held the first content chunk.
    assert len(sent) == 1
    assert first_content_at < fake.app.stats.last_stream_line_times[1]
    assert events_of(rest)[-1] == "[DONE]"


def test_client_that_leaves_after_three_chunks_leaves_one_disconnected_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    body = chat_body("gpt-4o-mini+pace100+chunks20")
    received: list[str] = []
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.v1 + "/chat/completions", json=body, headers=headers) as reply,
    ):
        for line in reply.iter_lines():
            if line.startswith("data: "):
                delta = orjson.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    received.append(delta["content"])
            if len(received) == 3:
                break
    assert received == chunk_texts(20)[:3]
    row = wait_for_row()
    assert row.status == UsageStatus.CLIENT_DISCONNECTED
    assert row.completion_tokens == count_text("".join(received))
    assert row.usage_estimated is True
    assert row.prompt_tokens > 0
    assert UsageLog.objects.count() == 1
    # The gateway closed its upstream connection: the fake saw its client leave.
    deadline = time.monotonic() + 5
    while fake.stats()["streams_disconnected"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = fake.stats()
    assert stats["streams_disconnected"] == 1
    assert stats["streams_completed"] == 0
    assert stats["in_flight"] == 0


def test_failure_after_five_chunks_ends_with_an_error_event_and_no_done(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("gpt-4o-mini+failafter5+chunks8"),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    events = events_of(reply.text.splitlines())
    assert reply.status_code == 200
    assert "[DONE]" not in events
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert contents == chunk_texts(8)[:5]
    assert events[-1] == {
        "error": {
            "message": MID_STREAM_ERROR,
            "type": "api_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.UPSTREAM_ERROR
    assert row.error == MID_STREAM_ERROR
    assert row.completion_tokens == count_text("".join(chunk_texts(8)[:5]))
    assert row.usage_estimated is True


@pytest.mark.parametrize(
    ("token", "status", "code", "state"),
    [
        ("bad-token", 503, "upstream_unavailable", UpstreamState.DISABLED),
        ("broke-token", 503, "upstream_unavailable", UpstreamState.COOLING),
        ("crash-token", 502, "upstream_error", UpstreamState.HEALTHY),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_upstream_failure_before_the_first_byte_is_an_openai_error_and_a_row(
    gateway: Gateway,
    fake: Fake,
    alice_key: str,
    make_upstream: Callable[..., Upstream],
    token: str,
    status: int,
    code: str,
    state: str,
    stream: bool,
) -> None:
    upstream = make_upstream(token=token)
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("gpt-4o-mini", stream=stream),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["type"] == "api_error"
    assert error["param"] is None
    assert token not in reply.text
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, status)
    assert (row.prompt_tokens, row.completion_tokens) == (0, 0)
    upstream.refresh_from_db()
    assert upstream.state == state
    assert upstream.consecutive_failures == 1


def test_unreachable_upstream_is_a_502_and_a_row(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(base_url=f"http://127.0.0.1:{free_port()}")
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("gpt-4o-mini"),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"
    assert UsageLog.objects.get().status == UsageStatus.UPSTREAM_ERROR


def test_a_failing_upstream_is_skipped_for_a_healthy_one(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(label="dead", token="bad-dead", weight=1000)
    make_upstream(label="alive", token="ok-alive", weight=1)
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("gpt-4o-mini", stream=False),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == 200
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.OK
    assert row.upstream is not None
    assert row.upstream.label == "alive"


def test_error_as_first_stream_line_is_a_failure_before_the_first_byte(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("claude-sonnet-4-5+errorfirst"),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"
    assert UsageLog.objects.get().status == UsageStatus.UPSTREAM_ERROR


def test_unknown_model_is_a_404_and_an_invalid_request_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        json=chat_body("no-such-model"),
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert reply.status_code == 404
    assert reply.json()["error"] == {
        "message": "The model 'no-such-model' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.INVALID_REQUEST, 404)
    upstream.refresh_from_db()
    assert upstream.consecutive_failures == 0


def test_client_that_leaves_before_the_answer_cancels_the_call_and_leaves_a_499_row(
    gateway: Gateway, fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    body = {"model": "gpt-4o-mini+delay3000", "messages": MESSAGES}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {alice_key}"},
            timeout=httpx.Timeout(10, read=0.5),
        )
    row = wait_for_row()
    assert (row.status, row.http_status) == (UsageStatus.CLIENT_DISCONNECTED, 499)
    assert row.latency_ms < 2500  # the call was cancelled when the client left, not waited out
    assert UsageLog.objects.count() == 1
    deadline = time.monotonic() + 5  # and the gateway left its upstream call too
    while fake.stats()["streams_disconnected"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["streams_disconnected"] == 1
