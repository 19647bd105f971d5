"""No API key or upstream token is ever written in plaintext: not in logs, not in the database."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from django.apps import apps

from gateway.models import Upstream
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

UPSTREAM_TOKEN = "ok-upstream-secret-7f3a9c"
FAILING_TOKEN = "bad-upstream-secret-1b2c3d"


def every_stored_value() -> str:
    values: list[str] = []
    for model in apps.get_models():
        for row in model._default_manager.values_list():
            values.extend(str(value) for value in row)
    return "\n".join(values)


def test_keys_and_tokens_never_reach_the_log_or_the_database(
    gateway: Gateway,
    fake: Fake,
    alice_key: str,
    make_upstream: Callable[..., Upstream],
) -> None:
    make_upstream(label="good", token=UPSTREAM_TOKEN, weight=1)
    make_upstream(label="failing", token=FAILING_TOKEN, weight=1000)
    before = gateway.log_path.stat().st_size
    auth = {"Authorization": f"Bearer {alice_key}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        reply = httpx.post(
            gateway.v1 + "/chat/completions", json={**body, "stream": stream}, headers=auth
        )
        assert reply.status_code == 200
    wrong = alice_key[:-4] + "abcd"
    assert (
        httpx.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {wrong}"},
        ).status_code
        == 401
    )
    with gateway.log_path.open(errors="replace") as log:
        log.seek(before)
        written = log.read()
    assert '"message":"model call"' in written  # the calls were logged ...
    assert alice_key[:11] in written  # ... by key prefix
    for secret in (alice_key, wrong, UPSTREAM_TOKEN, FAILING_TOKEN):
        assert secret not in written
    stored = every_stored_value()
    for secret in (alice_key, UPSTREAM_TOKEN, FAILING_TOKEN):
        assert secret not in stored
    assert fake.stats()["calls"] >= 3
