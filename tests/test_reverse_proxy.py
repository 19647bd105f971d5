"""Two gateway instances behind a round-robin reverse proxy, all on loopback.

Stands in for compose.yaml's nginx where Docker is not available: the proxy passes bytes on
as they arrive (as `proxy_buffering off` does), so a stream through it must still arrive
incrementally, and both instances serve from the one shared database.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

# Hop-by-hop headers, and the length the proxy recomputes: never forwarded as they are.
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-connection", b"content-length", b"host",
}  # fmt: skip
Scope = dict[str, Any]


@dataclass
class RoundRobinProxy:
    """An ASGI reverse proxy that hands each request to the next backend in turn."""

    backends: list[str]
    served_by: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._turns = itertools.cycle(self.backends)
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5))
        backend = next(self._turns)
        self.served_by.append(backend)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        request = self._client.build_request(
            scope["method"],
            backend + scope["path"] + (f"?{query}" if query else ""),
            headers=[(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP],
            content=body,
        )
        reply = await self._client.send(request, stream=True)
        try:
            headers = [(k, v) for k, v in reply.headers.raw if k.lower() not in HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": reply.status_code, "headers": headers}
            )
            # Each chunk goes on the moment it arrives: no buffering, as nginx is configured.
            async for chunk in reply.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await reply.aclose()


@pytest.fixture(scope="module")
def instances(django_db_setup: None, fake_server: Fake) -> Iterator[list[Gateway]]:
    servers = [start_gateway(fake_server.url, f"edge-{name}") for name in ("a", "b")]
    yield servers
    for server in servers:
        server.process.terminate()
        server.process.wait(10)


@pytest.fixture(scope="module")
def proxy(instances: list[Gateway]) -> Iterator[tuple[str, RoundRobinProxy]]:
    app = RoundRobinProxy([server.url for server in instances])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(5)


def chat_body(model: str, *, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.usefixtures("upstream")
def test_a_paced_stream_through_the_proxy_arrives_incrementally(
    proxy: tuple[str, RoundRobinProxy], fake: Fake, alice_key: str
) -> None:
    url, _app = proxy
    headers = {"Authorization": f"Bearer {alice_key}"}
    body = chat_body("gpt-4o-mini+pace100", stream=True)
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.headers["x-accel-buffering"] == "no"
        lines = reply.iter_lines()
        for line in lines:
            if '"content":"Hello "' in line:
                first_content_at = time.monotonic()
                break
        sent_then = len(fake.app.stats.last_stream_line_times)
        rest = [line for line in lines if line.startswith("data: ")]
    # The fake had sent one line when the client, two hops away, held the first content.
    assert sent_then == 1
    assert first_content_at < fake.app.stats.last_stream_line_times[1]
    assert rest[-1] == "data: [DONE]"


@pytest.mark.usefixtures("upstream", "fake")
def test_requests_alternate_between_instances_that_share_one_ledger(
    proxy: tuple[str, RoundRobinProxy], instances: list[Gateway], alice_key: str
) -> None:
    url, app = proxy
    served_before = len(app.served_by)
    ids = ["edge-call-1", "edge-call-2", "edge-call-3", "edge-call-4"]
    replies = [
        httpx.post(
            url + "/v1/chat/completions",
            json=chat_body("gpt-4o-mini", stream=False),
            headers={"Authorization": f"Bearer {alice_key}", "x-request-id": request_id},
            timeout=10,
        )
        for request_id in ids
    ]
    assert [reply.status_code for reply in replies] == [200] * 4
    assert [reply.headers["x-request-id"] for reply in replies] == ids
    assert all(orjson.loads(reply.content)["object"] == "chat.completion" for reply in replies)
    backends = app.served_by[served_before:]
    assert sorted(backends) == sorted([server.url for server in instances] * 2)
    assert backends[0] != backends[1]
    rows = UsageLog.objects.order_by("request_id")
    assert [(row.request_id, row.status) for row in rows] == [(i, UsageStatus.OK) for i in ids]


@pytest.mark.usefixtures("fake")
def test_both_instances_are_ready_behind_the_proxy(
    proxy: tuple[str, RoundRobinProxy], upstream: Upstream
) -> None:
    url, _app = proxy
    replies = [httpx.get(url + "/readyz", timeout=10) for _ in range(2)]
    assert [reply.status_code for reply in replies] == [200, 200]
    assert {reply.json()["status"] for reply in replies} == {"ok"}
