"""No API key or upstream token is ever written in plaintext: not in logs, not in the database.

`Surfaces` and `every_stored_value` are shared with tests/test_secrets_everywhere.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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


def reply_text(reply: httpx.Response) -> str:
    """Status, headers (cookies included) and body of a reply and of the redirects before it."""
    parts = []
    for step in (*reply.history, reply):
        headers = "\n".join(f"{name}: {value}" for name, value in step.headers.multi_items())
        parts.append(f"{step.status_code} {step.request.method} {step.url}\n{headers}\n\n")
    return "".join(parts) + reply.text


@dataclass
class Surfaces:
    """Named texts a secret could leak into: log files, replies, pages, command output, rows."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> str:
        # An empty surface would make "the secret is absent" mean nothing.
        assert text.strip(), f"nothing was collected from {name}"
        unique, n = name, 1
        while unique in self.texts:
            n += 1
            unique = f"{name} #{n}"
        self.texts[unique] = text
        return text

    def add_reply(self, name: str, reply: httpx.Response, status: int) -> httpx.Response:
        assert reply.status_code == status, f"{name}: {reply.status_code} {reply.text[:500]}"
        self.add(name, reply_text(reply))
        return reply

    def leaks(self, secrets: Mapping[str, str]) -> list[str]:
        """Each secret found, by label and first 8 characters, with the surfaces it is in."""
        found = []
        for label, secret in secrets.items():
            where = [name for name, text in self.texts.items() if secret in text]
            if where:
                found.append(f"{label} ({secret[:8]}…) in: {', '.join(where)}")
        return found


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
    surfaces = Surfaces()
    surfaces.add("gateway log", written)
    surfaces.add("database", every_stored_value())
    secrets = {"key": alice_key, "upstream token": UPSTREAM_TOKEN, "failing token": FAILING_TOKEN}
    assert not surfaces.leaks(secrets)
    assert wrong not in written
    assert fake.stats()["calls"] >= 3
