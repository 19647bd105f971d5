"""The database failing outside admission's own check still leaves exactly one row.

In process, against the fake Puter over loopback: the database step named fails once.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import orjson
import pytest
from django.db import OperationalError
from django.test import override_settings

from accounts.models import UsageLog, UsageStatus
from gateway.models import Upstream
from gateway.pool import forget_pool
from tests.conftest import Fake
from tests.test_stalled_peer import scope_for

pytestmark = pytest.mark.django_db(transaction=True)

GONE = OperationalError("server closed the connection unexpectedly")


async def call(key: str, model: str) -> tuple[int, dict[str, Any]]:
    from project.asgi import application

    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(application(scope_for(key, body), receive, send), timeout=10)
    reply = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], orjson.loads(reply)


def fail_once(target: str, fake: Fake, key: str, model: str) -> tuple[int, dict[str, Any]]:
    forget_pool()
    with (
        override_settings(PUTER_API_BASE=fake.url),
        mock.patch(target, side_effect=GONE),
    ):
        return asyncio.run(call(key, model))


def test_a_pool_refresh_that_fails_is_a_503_with_its_row(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    with mock.patch("gateway.pool._have_copy", False):
        status, reply = fail_once("gateway.pool.load_entries", fake, alice_key, "gpt-4o-mini")
    assert (status, reply["error"]["code"]) == (503, "database_unavailable")
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.REJECTED, 503)


def test_a_pool_refresh_that_fails_serves_from_the_last_copy(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    forget_pool()
    assert fail_once("gateway.pool.record_success", fake, alice_key, "gpt-4o-mini")[0] == 200
    status, _reply = fail_once("gateway.pool.load_entries", fake, alice_key, "gpt-4o-mini")
    assert status == 200
    assert list(UsageLog.objects.values_list("status", flat=True)) == ["ok", "ok"]


def test_an_answer_whose_health_mark_fails_is_still_served_and_metered(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    # A failure counted before makes the success worth recording.
    Upstream.objects.filter(pk=upstream.pk).update(consecutive_failures=1)
    status, reply = fail_once("gateway.pool.record_success", fake, alice_key, "gpt-4o-mini")
    assert status == 200
    assert reply["choices"][0]["message"]["content"]
    row = UsageLog.objects.get()
    assert (row.status, row.completion_tokens) == (
        UsageStatus.OK,
        reply["usage"]["completion_tokens"],
    )


def test_a_failure_whose_health_mark_fails_is_still_the_upstreams_error(
    fake: Fake, alice_key: str, upstream: Upstream
) -> None:
    model = "gpt-4o-mini+http500"
    status, reply = fail_once("gateway.pool.record_failure", fake, alice_key, model)
    assert status == 502
    assert reply["error"]["code"] != "database_unavailable"
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.UPSTREAM_ERROR, 502)
