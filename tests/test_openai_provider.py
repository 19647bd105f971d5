"""The same streams, usage and disconnects over both providers: Puter and OpenAI-compatible.

Each test runs once against the fake Puter and once against the fake OpenAI-compatible
server; both fakes answer with the same content, so the expected values are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from accounts.models import UsageLog, UsageStatus
from gateway.models import Provider, Upstream, UpstreamState
from gateway.testing.fake_scenarios import (
    MID_STREAM_ERROR,
    chunk_texts,
    expected_text,
    expected_usage,
    listed_models,
)
from gateway.tokens import count_text
from tests.conftest import Fake, Gateway, OpenAIFake, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the gateway, please."},
]


@dataclass
class Served:
    """An upstream of one provider and the fake behind it."""

    provider: str
    fake: Fake | OpenAIFake
    make: Callable[..., Upstream]

    def upstream(self, token: str = "ok-main-token", **fields: Any) -> Upstream:
        if self.provider == Provider.OPENAI:
            fields.setdefault("base_url", self.fake.base_url)  # type: ignore[union-attr]
        return self.make(
            label=fields.pop("label", "main"), token=token, provider=self.provider, **fields
        )

    def line_times(self) -> list[float]:
        return self.fake.app.stats.last_stream_line_times


@pytest.fixture(params=[Provider.PUTER, Provider.OPENAI])
def served(
    request: pytest.FixtureRequest,
    fake: Fake,
    fake_openai: OpenAIFake,
    make_upstream: Callable[..., Upstream],
) -> Served:
    backend: Fake | OpenAIFake = fake if request.param == Provider.PUTER else fake_openai
    return Served(request.param, backend, make_upstream)


def post(gateway: Gateway, key: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": True, **extra}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.v1 + "/chat/completions", json=body, headers=headers, timeout=10)


def events_of(lines: list[str]) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:])
        for line in lines
        if line.startswith("data: ")
    ]


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def test_first_chunk_reaches_the_client_while_the_fake_is_still_pacing(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    body = {"model": "gpt-4o-mini+pace100", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {alice_key}"}
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
        sent = list(served.line_times())
        rest = list(lines)
    assert len(sent) == 1
    assert first_content_at < served.line_times()[1]
    assert events_of(rest)[-1] == "[DONE]"


def test_streams_that_end_leave_their_upstream_connection_for_the_next_call(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    # An OpenAI-compatible upstream sends [DONE] before its body ends: the gateway reads
    # that end too, or every stream would cost a new connection on both sides.
    served.upstream()
    for _ in range(3):
        reply = post(gateway, alice_key, "gpt-4o-mini+chunks5")
        assert events_of(reply.text.splitlines())[-1] == "[DONE]"
    stats = served.fake.stats()
    assert stats["calls"] == 3
    assert len(stats["connections"]) == 1


def test_client_that_leaves_after_three_chunks_leaves_one_disconnected_row(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    body = {"model": "gpt-4o-mini+pace100+chunks20", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {alice_key}"}
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
    assert (row.status, row.usage_estimated) == (UsageStatus.CLIENT_DISCONNECTED, True)
    assert row.completion_tokens == count_text("".join(received))
    assert row.prompt_tokens > 0
    assert row.upstream is not None
    assert row.upstream.label == "main"
    deadline = time.monotonic() + 5
    while served.fake.stats()["streams_disconnected"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = served.fake.stats()
    assert (stats["streams_disconnected"], stats["streams_completed"]) == (1, 0)
    assert stats["in_flight"] == 0
    assert UsageLog.objects.count() == 1


def wait_for_row(timeout: float = 5.0) -> UsageLog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = UsageLog.objects.first()
        if row is not None:
            return row
        time.sleep(0.02)
    raise AssertionError("no usage row was written")


def test_failure_after_five_chunks_ends_with_an_error_event_and_no_done(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    reply = post(gateway, alice_key, "gpt-4o-mini+failafter5+chunks8")
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
    assert (row.status, row.error, row.usage_estimated) == (
        UsageStatus.UPSTREAM_ERROR,
        MID_STREAM_ERROR,
        True,
    )
    assert row.completion_tokens == count_text("".join(chunk_texts(8)[:5]))


def test_sdk_non_streaming_completion_has_the_fakes_exact_usage(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    raw = sdk(gateway, alice_key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    completion = raw.parse()
    prompt, completion_tokens = expected_usage("gpt-4o-mini", MESSAGES, 5)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == expected_text(5)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        prompt,
        completion_tokens,
    )
    row = UsageLog.objects.get()
    assert row.request_id == raw.headers["x-request-id"]
    assert (row.status, row.stream, row.usage_estimated) == (UsageStatus.OK, False, False)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion_tokens)
    assert (row.model, row.upstream_model) == ("gpt-4o-mini", "gpt-4o-mini")


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash+reasoning"])
def test_sdk_stream_with_include_usage_ends_with_the_fakes_exact_usage(
    gateway: Gateway, served: Served, alice_key: str, model: str
) -> None:
    served.upstream()
    stream = sdk(gateway, alice_key).chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    prompt, completion_tokens = expected_usage(model, MESSAGES, 5)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert contents == chunk_texts(5)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {model}
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        prompt,
        completion_tokens,
    )
    row = UsageLog.objects.get()
    assert (row.status, row.stream, row.usage_estimated) == (UsageStatus.OK, True, False)
    assert (row.prompt_tokens, row.completion_tokens) == (prompt, completion_tokens)


def test_sdk_stream_without_include_usage_has_no_usage_chunk_and_an_exact_row(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    chunks = list(
        sdk(gateway, alice_key).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text(5)
    row = UsageLog.objects.get()
    # The gateway asks for the upstream's usage whatever the client asked.
    assert (row.status, row.usage_estimated) == (UsageStatus.OK, False)
    assert (row.prompt_tokens, row.completion_tokens) == expected_usage("gpt-4o-mini", MESSAGES, 5)


def test_stream_without_upstream_usage_is_estimated(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    chunks = list(
        sdk(gateway, alice_key).chat.completions.create(
            model="gpt-4o-mini+nousage",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    row = UsageLog.objects.get()
    assert row.usage_estimated is True
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert usage.completion_tokens > 0


def test_tool_calls_come_through_the_sdk_stream(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    tools: Any = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("lookup", "search")
    ]
    chunks = list(
        sdk(gateway, alice_key).chat.completions.create(
            model="gpt-4o-mini+tools", messages=MESSAGES, stream=True, tools=tools
        )
    )
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert [(c.index, c.function.name, c.function.arguments) for c in calls if c.function] == [
        (0, "lookup", '{"q":"x"}'),
        (1, "search", '{"q":"x"}'),
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


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
    served: Served,
    alice_key: str,
    token: str,
    status: int,
    code: str,
    state: str,
    stream: bool,
) -> None:
    upstream = served.upstream(token=token)
    reply = post(gateway, alice_key, "gpt-4o-mini", stream=stream)
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code
    assert token not in reply.text
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, status)
    upstream.refresh_from_db()
    assert (upstream.state, upstream.consecutive_failures) == (state, 1)
    assert upstream.last_error_at is not None


def test_error_as_first_stream_event_is_a_failure_before_the_first_byte(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    reply = post(gateway, alice_key, "claude-sonnet-4-5+errorfirst")
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "upstream_error"
    assert UsageLog.objects.get().status == UsageStatus.UPSTREAM_ERROR


def test_unknown_model_is_a_404_and_leaves_the_upstream_healthy(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    upstream = served.upstream()
    reply = post(gateway, alice_key, "no-such-model")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    assert UsageLog.objects.get().status == UsageStatus.INVALID_REQUEST
    upstream.refresh_from_db()
    assert (upstream.state, upstream.consecutive_failures) == (UpstreamState.HEALTHY, 0)


def test_models_are_the_upstreams_catalogue(
    gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    listed = sdk(gateway, alice_key).models.list().data
    expected = {(m.id, m.provider) for m in listed_models()}
    assert {(m.id, m.owned_by) for m in listed} >= expected


# --- a gateway with a short read timeout -------------------------------------------------


@pytest.fixture(scope="module")
def impatient_gateway(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "impatient-providers", UPSTREAM_READ_TIMEOUT="0.5")
    yield server
    server.process.terminate()
    server.process.wait(10)


@pytest.mark.parametrize("stream", [True, False])
def test_silence_before_the_first_byte_is_504_upstream_timeout(
    impatient_gateway: Gateway, served: Served, alice_key: str, stream: bool
) -> None:
    served.upstream()
    reply = post(impatient_gateway, alice_key, "gpt-4o-mini+delay3000", stream=stream)
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "upstream_timeout"
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 504)


def test_silence_mid_stream_ends_with_an_upstream_timeout_event(
    impatient_gateway: Gateway, served: Served, alice_key: str
) -> None:
    served.upstream()
    reply = post(impatient_gateway, alice_key, "gpt-4o-mini+hangafter3+chunks6")
    events = events_of(reply.text.splitlines())
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert contents == chunk_texts(6)[:3]
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "[DONE]" not in reply.text
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.UPSTREAM_ERROR
    assert row.completion_tokens == count_text("".join(chunk_texts(6)[:3]))
