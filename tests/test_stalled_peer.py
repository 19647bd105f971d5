"""A client that stops reading: the relay's cleanup still runs inside the request.

Called in-process through `project.asgi.application(scope, receive, send)`: the peer's
`send()` blocks after the first body message, then the peer disconnects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from django.test import override_settings

from accounts.db_thread import run_in_db_thread
from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.pool import forget_pool
from tests.conftest import Fake

pytestmark = pytest.mark.django_db(transaction=True)


def scope_for(key: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def stalled_call(key: str) -> tuple[list[dict[str, Any]], int]:
    from project.asgi import application

    body = orjson.dumps(
        {
            "model": "gpt-4o-mini+pace50+chunks40",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    sent: list[dict[str, Any]] = []
    stalled = asyncio.Event()
    delivered = [False]

    async def receive() -> dict[str, Any]:
        if not delivered[0]:
            delivered[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await stalled.wait()
        await asyncio.sleep(0.3)  # the peer hangs, then drops the connection
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            stalled.set()
            await asyncio.Event().wait()  # the peer stopped reading: block for ever

    await asyncio.wait_for(application(scope_for(key, body), receive, send), timeout=10)
    # Counted when the application returned: the row belongs to the request's lifetime.
    # Read in a database thread: its connections are closed when the tests end (Django's own
    # async queries would leave one open in asgiref's thread, and the test database in use).
    rows = await run_in_db_thread(UsageLog.objects.count)
    return sent, rows


def test_stalled_peer_gets_its_row_written_before_the_request_ends(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    forget_pool()
    with override_settings(PUTER_API_BASE=fake.url):
        sent, rows_at_return = asyncio.run(stalled_call(alice_key))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    assert rows_at_return == 1
    row = UsageLog.objects.get()
    assert row.status == UsageStatus.CLIENT_DISCONNECTED
    assert row.stream is True
    # The upstream connection was closed too: the fake saw its client go.
    stats = fake.stats()
    assert stats["streams_disconnected"] == 1
    assert stats["in_flight"] == 0
