"""`/healthz` and `/readyz` over real HTTP: what each check says, and 503 when one fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings

from gateway.models import Upstream, UpstreamState
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


def stop(server: Gateway) -> None:
    server.process.terminate()
    server.process.wait(10)


@pytest.fixture(scope="module")
def gateway_without_database(
    django_db_setup: None, fake_server: Fake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    missing = tmp_path_factory.mktemp("nodb") / "missing" / "db.sqlite3"
    server = start_gateway(fake_server.url, "probes-nodb", DATABASE_URL=f"sqlite:///{missing}")
    yield server
    stop(server)


@pytest.fixture(scope="module")
def gateway_without_redis(django_db_setup: None, fake_server: Fake) -> Iterator[Gateway]:
    # Port 9 (discard) on loopback: nothing listens, so every connection is refused.
    server = start_gateway(fake_server.url, "probes-noredis", REDIS_URL="redis://127.0.0.1:9/0")
    yield server
    stop(server)


def ready_checks(**failed: str) -> dict[str, str]:
    checks = {"database": "ok", "upstreams": "ok"}
    if settings.REDIS_URL:
        checks["redis"] = "ok"
    return {**checks, **failed}


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=15, **kwargs)


def test_healthz_says_ok(gateway: Gateway) -> None:
    reply = get(gateway.url + "/healthz")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"].startswith("req_")
    assert reply.json() == {"status": "ok"}


def test_healthz_answers_while_the_database_is_unreachable(
    gateway_without_database: Gateway,
) -> None:
    reply = get(gateway_without_database.url + "/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


@pytest.mark.usefixtures("upstream")
def test_readyz_is_200_with_every_check_ok(gateway: Gateway) -> None:
    reply = get(gateway.url + "/readyz")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"status": "ok", "checks": ready_checks()}


def test_readyz_is_503_without_any_upstream(gateway: Gateway) -> None:
    reply = get(gateway.url + "/readyz")
    assert reply.status_code == 503
    assert reply.json() == {
        "status": "unavailable",
        "checks": ready_checks(upstreams="no enabled upstream that is not disabled"),
    }


def test_readyz_is_503_when_every_enabled_upstream_is_disabled(
    gateway: Gateway, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("bad-token", state=UpstreamState.DISABLED)
    make_upstream("switched-off", token="ok-off", enabled=False)
    reply = get(gateway.url + "/readyz")
    assert reply.status_code == 503
    assert reply.json()["checks"] == ready_checks(
        upstreams="no enabled upstream that is not disabled"
    )


def test_readyz_counts_a_cooling_upstream_as_ready(
    gateway: Gateway, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(state=UpstreamState.COOLING)
    reply = get(gateway.url + "/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "checks": ready_checks()}


def test_readyz_is_503_when_the_database_is_unreachable(gateway_without_database: Gateway) -> None:
    reply = get(gateway_without_database.url + "/readyz")
    assert reply.status_code == 503
    assert reply.json() == {
        "status": "unavailable",
        "checks": ready_checks(database="failed (OperationalError)", upstreams="unknown"),
    }


@pytest.mark.usefixtures("upstream")
def test_readyz_is_503_when_redis_is_configured_but_unreachable(
    gateway_without_redis: Gateway,
) -> None:
    reply = get(gateway_without_redis.url + "/readyz")
    assert reply.status_code == 503
    assert reply.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "upstreams": "ok", "redis": "failed (ConnectionError)"},
    }


def test_probes_refuse_other_methods_in_openai_shape(gateway: Gateway) -> None:
    reply = httpx.post(gateway.url + "/healthz", timeout=10)
    assert reply.status_code == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.json() == {
        "error": {
            "message": "This route does not accept that HTTP method.",
            "type": "invalid_request_error",
            "param": None,
            "code": "method_not_allowed",
        }
    }
