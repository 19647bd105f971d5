"""Security settings and tools: the failed-auth throttle, key rotation, `check --deploy`."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from gateway import auth_throttle
from gateway.errors import OpenAIError
from gateway.models import Upstream
from gateway.testing.live_servers import redis_answers, redis_url
from tests.conftest import BASE_DIR, Fake, Gateway, start_gateway

LIMIT = 3


@pytest.fixture(scope="module")
def strict_gateway(django_db_setup: None, fake_server: Fake) -> Iterator[Gateway]:
    server = start_gateway(fake_server.url, "strict", AUTH_FAILURES_PER_MINUTE=str(LIMIT))
    yield server
    server.process.terminate()
    server.process.wait(10)


def client_from(address: str) -> httpx.Client:
    """A client whose connections leave from `address` (anywhere in 127.0.0.0/8)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(transport=transport, timeout=10)


def fresh_address() -> str:
    # Random, so that a count left in Redis by an earlier run within the minute never matters.
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def models(http: httpx.Client, gateway: Gateway, key: str) -> httpx.Response:
    return http.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {key}"})


# --- the failed-authentication throttle --------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "fake")
def test_an_address_past_its_failures_gets_429_even_with_a_valid_key(
    strict_gateway: Gateway, alice_key: str
) -> None:
    with client_from(fresh_address()) as guesser, client_from(fresh_address()) as other:
        wrong = [models(guesser, strict_gateway, "sk-" + "x" * 48) for _ in range(LIMIT)]
        refused = models(guesser, strict_gateway, alice_key)
        elsewhere = models(other, strict_gateway, alice_key)

    assert [reply.status_code for reply in wrong] == [401] * LIMIT
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json() == {
        "error": {
            "message": "Too many failed authentication attempts from this address; "
            f"retry in {refused.headers['retry-after']} s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert elsewhere.status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "fake")
def test_successes_do_not_count_toward_the_throttle(
    strict_gateway: Gateway, alice_key: str
) -> None:
    with client_from(fresh_address()) as http:
        statuses = [models(http, strict_gateway, alice_key).status_code for _ in range(LIMIT + 3)]
    assert statuses == [200] * (LIMIT + 3)


def test_the_sliding_window_frees_an_address_as_its_oldest_failure_ages_out() -> None:
    auth_throttle.forget_failures()
    for moment in (0.0, 10.0, 20.0):
        auth_throttle._memory_note("198.51.100.7", 3, moment)
    assert auth_throttle._memory_wait("198.51.100.7", 3, 30.0) == 30.0
    assert auth_throttle._memory_wait("198.51.100.8", 3, 30.0) == 0.0
    assert auth_throttle._memory_wait("198.51.100.7", 3, 60.0) == 0.0  # the first aged out
    assert auth_throttle._memory_wait("198.51.100.7", 3, 80.0) == 0.0
    assert "198.51.100.7" not in auth_throttle._failures


def test_ipv6_clients_are_counted_by_their_64_bit_prefix() -> None:
    assert auth_throttle.client_scope("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert auth_throttle.client_scope("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert auth_throttle.client_scope("203.0.113.5") == "203.0.113.5"


def test_memory_for_addresses_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    auth_throttle.forget_failures()
    monkeypatch.setattr(auth_throttle, "_MEMORY_ADDRESSES", 10)
    for n in range(25):
        auth_throttle._memory_note(f"192.0.2.{n}", 3, 100.0 + n)
    assert len(auth_throttle._failures) == 10
    assert "192.0.2.24" in auth_throttle._failures
    auth_throttle.forget_failures()


async def refused(address: str) -> bool:
    """Whether the throttle turns a call from `address` away."""
    try:
        await auth_throttle.refuse_if_throttled(address)
    except OpenAIError:
        return True
    return False


@pytest.mark.skipif(not redis_answers(), reason="Redis does not answer")
def test_failures_counted_by_other_workers_are_seen_within_a_second() -> None:
    url = redis_url()
    prefix = f"test-throttle-{secrets.token_hex(4)}"
    address, key = "192.0.2.77", f"{prefix}:authfail:192.0.2.77"

    async def run() -> list[bool]:
        seen = [await refused(address)]  # clean: read from Redis, and remembered
        shared = redis.asyncio.Redis.from_url(url)
        await shared.set(key, LIMIT, ex=60)  # other workers counted the failures
        seen.append(await refused(address))  # this worker's copy is still fresh
        await asyncio.sleep(auth_throttle.SHARED_FRESH + 0.1)
        seen.append(await refused(address))
        await shared.delete(key)
        await shared.aclose()
        await auth_throttle.note_auth_failure(address)  # counted here: seen at once
        seen.append(await refused(address))
        return seen

    auth_throttle.forget_failures()
    try:
        with override_settings(REDIS_URL=url, REDIS_KEY_PREFIX=prefix, AUTH_FAILURES_PER_MINUTE=1):
            assert asyncio.run(run()) == [False, False, True, True]
    finally:
        auth_throttle.forget_failures()


@pytest.mark.skipif(not redis_answers(), reason="Redis does not answer")
def test_calls_arriving_together_share_one_read_of_the_shared_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = redis_url()
    reads: list[str] = []
    read_from_redis = auth_throttle._redis_wait

    async def counted(scope: str, limit: int) -> float:
        reads.append(scope)
        return await read_from_redis(scope, limit)

    monkeypatch.setattr(auth_throttle, "_redis_wait", counted)

    async def burst() -> None:
        await asyncio.gather(*(auth_throttle.refuse_if_throttled("192.0.2.78") for _ in range(20)))

    auth_throttle.forget_failures()
    try:
        with override_settings(
            REDIS_URL=url, REDIS_KEY_PREFIX=f"test-throttle-{secrets.token_hex(4)}"
        ):
            asyncio.run(burst())
    finally:
        auth_throttle.forget_failures()
    assert reads == ["192.0.2.78"]


@pytest.mark.skipif(not redis_answers(), reason="Redis does not answer")
def test_a_failure_noted_while_the_count_is_read_is_not_hidden_by_that_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = redis_url()
    address = "192.0.2.79"
    read_from_redis = auth_throttle._redis_wait
    noted = asyncio.Event()

    async def slow(scope: str, limit: int) -> float:
        wait = await read_from_redis(scope, limit)
        await noted.wait()  # the failure is counted after this read, before it returns
        return wait

    async def run() -> list[bool]:
        reading = asyncio.ensure_future(refused(address))
        await asyncio.sleep(0.05)  # the read has been answered and is held
        monkeypatch.setattr(auth_throttle, "_redis_wait", read_from_redis)
        await auth_throttle.note_auth_failure(address)
        noted.set()
        return [await reading, await refused(address)]

    monkeypatch.setattr(auth_throttle, "_redis_wait", slow)
    auth_throttle.forget_failures()
    try:
        prefix = f"test-throttle-{secrets.token_hex(4)}"
        with override_settings(REDIS_URL=url, REDIS_KEY_PREFIX=prefix, AUTH_FAILURES_PER_MINUTE=1):
            # The call in flight read the count before the failure; the next one sees it.
            assert asyncio.run(run()) == [False, True]
    finally:
        auth_throttle.forget_failures()


# --- rotate_encryption_key -------------------------------------------------------------


def _make_upstreams(make_upstream: Callable[..., Upstream]) -> dict[str, str]:
    tokens = {"rot-1": "ok-rotation-token-1", "rot-2": "ok-rotation-token-2"}
    for label, token in tokens.items():
        make_upstream(label, token=token)
    return tokens


@pytest.mark.django_db
def test_rotate_encryption_key_reencrypts_every_token_with_the_first_key(
    make_upstream: Callable[..., Upstream],
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(TOKEN_ENCRYPTION_KEYS=[old]):
        tokens = _make_upstreams(make_upstream)
    before = dict(Upstream.objects.values_list("label", "token_encrypted"))
    out, err = StringIO(), StringIO()
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new, old]):
        call_command("rotate_encryption_key", stdout=out, stderr=err)

    assert out.getvalue() == "2\n"
    assert err.getvalue() == "Re-encrypted 2 upstream tokens with the first key.\n"
    with override_settings(TOKEN_ENCRYPTION_KEYS=[new]):  # the old key is dropped
        assert {u.label: u.token for u in Upstream.objects.all()} == tokens
    after = dict(Upstream.objects.values_list("label", "token_encrypted"))
    assert all(after[label] != before[label] for label in tokens)
    assert all(token not in after.values() for token in tokens.values())


@pytest.mark.django_db
def test_rotate_encryption_key_changes_nothing_when_a_token_will_not_open(
    make_upstream: Callable[..., Upstream],
) -> None:
    lost, kept, new = (Fernet.generate_key().decode() for _ in range(3))
    with override_settings(TOKEN_ENCRYPTION_KEYS=[kept]):
        make_upstream("readable", token="ok-readable")
    with override_settings(TOKEN_ENCRYPTION_KEYS=[lost]):
        make_upstream("orphan", token="ok-orphan")
    before = dict(Upstream.objects.values_list("label", "token_encrypted"))

    with (
        override_settings(TOKEN_ENCRYPTION_KEYS=[new, kept]),
        pytest.raises(CommandError, match=r"these upstreams: orphan\. Nothing was changed"),
    ):
        call_command("rotate_encryption_key", stdout=StringIO(), stderr=StringIO())
    assert dict(Upstream.objects.values_list("label", "token_encrypted")) == before


# --- check --deploy ----------------------------------------------------------------------


def deploy_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "SESSION_", "CSRF_")) and key not in {"DEBUG", "HTTPS"}
    }
    environment.update(
        VAR_DIR=str(tmp_path),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="gateway.example.com",
        **env,
    )
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(
        command, cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_the_production_settings(tmp_path: Path) -> None:
    result = deploy_check(tmp_path, DEBUG="false", HTTPS="true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "System check identified no issues (0 silenced).\n"
    assert "WARNING" not in result.stderr


def test_check_deploy_warns_on_the_plain_http_defaults(tmp_path: Path) -> None:
    result = deploy_check(tmp_path)
    assert result.returncode == 1
    for check_id in ("W004", "W008", "W012", "W016"):
        assert f"security.{check_id}" in result.stderr
